"""edgeweave.flows"""
