"""edgeweave.agent"""
