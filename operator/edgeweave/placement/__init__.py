"""edgeweave.placement"""
