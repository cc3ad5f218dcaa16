"""edgeweave.gpu"""
