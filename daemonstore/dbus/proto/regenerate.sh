#!/bin/sh
# Regenerate the *_pb2.py modules from the .proto subset (needs the [dev] extra: grpcio-tools).
cd "$(dirname "$0")/../../.." && exec python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. daemonstore/dbus/proto/rpc.proto daemonstore/dbus/proto/UserDataAuth.proto
