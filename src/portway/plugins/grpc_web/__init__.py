"""Built-in plugin `grpc_web`: gRPC-Web (binary and text) clients to a gRPC upstream."""
