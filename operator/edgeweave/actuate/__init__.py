"""edgeweave.actuate"""
