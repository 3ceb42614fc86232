"""Built-in plugin `grpc_transcode`: JSON/HTTP ↔ gRPC from a descriptor set."""
