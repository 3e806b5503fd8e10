"""The fault engine: rules decided from a seed, applied on the wire (TCP, UDP) and by protocols."""
