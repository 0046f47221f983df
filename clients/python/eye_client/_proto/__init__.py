"""Generated gRPC stubs of The Eye (see generate.py); do not edit."""
