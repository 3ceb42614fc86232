"""gRPC wire helpers shared by the grpc_transcode and grpc_web plugins."""
