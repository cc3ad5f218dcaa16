"""edgeweave.telemetry"""
