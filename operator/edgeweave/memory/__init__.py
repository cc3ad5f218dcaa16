"""edgeweave.memory"""
