"""edgeweave.handlers"""
