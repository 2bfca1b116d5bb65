#!/usr/bin/env python3
"""A minimal CRI client for tests/cni_containerd.rs: creates, stops and removes pods through
containerd's CRI exactly as kubelet calls it (RunPodSandbox, StopPodSandbox,
RemovePodSandbox). The gRPC code is generated from cri.proto (beside this file) with
grpcio-tools into the directory --gen names, once.

  cri_client.py --socket S --gen DIR run --name web --namespace shop --uid U [--annotation K=V]...
      prints the pod sandbox id; on failure prints the runtime's error and exits 1
  cri_client.py --socket S --gen DIR stop ID / remove ID
"""
import argparse
import os
import sys


def generated(gen_dir):
    here = os.path.dirname(os.path.abspath(__file__))
    if not os.path.exists(os.path.join(gen_dir, "cri_pb2_grpc.py")):
        from grpc_tools import protoc

        os.makedirs(gen_dir, exist_ok=True)
        status = protoc.main(["protoc", "-I" + here, "--python_out=" + gen_dir,
                              "--grpc_python_out=" + gen_dir, os.path.join(here, "cri.proto")])
        if status != 0:
            sys.exit("cri_client.py: protoc failed")
    sys.path.insert(0, gen_dir)
    import cri_pb2
    import cri_pb2_grpc

    return cri_pb2, cri_pb2_grpc


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--gen", required=True)
    parser.add_argument("--timeout", type=float, default=60)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--name", required=True)
    run.add_argument("--namespace", required=True)
    run.add_argument("--uid", required=True)
    run.add_argument("--annotation", action="append", default=[])
    for name in ("stop", "remove"):
        sub.add_parser(name).add_argument("id")
    args = parser.parse_args()

    import grpc

    pb, pb_grpc = generated(args.gen)
    channel = grpc.insecure_channel("unix://" + args.socket)
    runtime = pb_grpc.RuntimeServiceStub(channel)
    try:
        if args.command == "run":
            annotations = dict(a.split("=", 1) for a in args.annotation)
            config = pb.PodSandboxConfig(
                metadata=pb.PodSandboxMetadata(name=args.name, uid=args.uid,
                                               namespace=args.namespace, attempt=0),
                hostname=args.name,
                labels={"app": args.name},
                annotations=annotations,
            )
            reply = runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config),
                                          timeout=args.timeout)
            print(reply.pod_sandbox_id)
        elif args.command == "stop":
            runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=args.id),
                                   timeout=args.timeout)
        else:
            runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=args.id),
                                     timeout=args.timeout)
    except grpc.RpcError as e:
        print(f"{e.code().name}: {e.details()}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
