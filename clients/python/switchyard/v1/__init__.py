"""Generated gRPC code for switchyard.v1 (see ../../generate.sh); do not edit the *_pb2* files."""
