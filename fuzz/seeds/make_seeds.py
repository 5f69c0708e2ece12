#!/usr/bin/env python3
"""Writes the first seed corpora of the fuzz targets (fuzz/corpus/<target>/): small valid inputs
and known-hostile ones (path escapes, links out of the root, huge frame lengths). The fuzzer
grows the corpus from these; `scripts/fuzz.sh` keeps what it finds under fuzz/corpus."""
import gzip, io, json, os, struct, sys, tarfile

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")

def write(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def tar_bytes(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()

def entry(name, kind=tarfile.REGTYPE, data=b"", link="", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (data if kind == tarfile.REGTYPE else None)

# layer_unpack
plain = tar_bytes([
    entry("bin/", tarfile.DIRTYPE, mode=0o755),
    entry("bin/sh", data=b"#!/bin/true\n", mode=0o755),
    entry("bin/ls", tarfile.SYMTYPE, link="sh"),
    entry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"),
    entry("etc/hard", tarfile.LNKTYPE, link="etc/passwd"),
    entry("etc/.wh.removed"),
    entry("opt/.wh..wh..opq"),
])
write("layer_unpack", "plain.tar", plain)
write("layer_unpack", "plain.tar.gz", gzip.compress(plain))
write("layer_unpack", "dotdot.tar", tar_bytes([entry("../escape", data=b"x")]))
write("layer_unpack", "absolute.tar", tar_bytes([entry("/escape", data=b"x")]))
write("layer_unpack", "symlink-out.tar", tar_bytes([
    entry("out", tarfile.SYMTYPE, link="/tmp"), entry("out/escape", data=b"x")]))
write("layer_unpack", "hardlink-out.tar", tar_bytes([
    entry("passwd", tarfile.LNKTYPE, link="../../../etc/passwd")]))
write("layer_unpack", "device.tar", tar_bytes([entry("dev/sda", tarfile.BLKTYPE)]))

# oci_documents
config = {"architecture": "amd64", "os": "linux",
          "config": {"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"], "Env": ["A=b"],
                     "WorkingDir": "/", "User": "0:0"},
          "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}}
write("oci_documents", "config.json", json.dumps(config).encode())
desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": "sha256:" + "1" * 64, "size": 123}
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": dict(desc, mediaType="application/vnd.oci.image.config.v1+json"),
            "layers": [desc]}
write("oci_documents", "manifest.json", json.dumps(manifest).encode())
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [dict(desc, mediaType="application/vnd.oci.image.manifest.v1+json",
                            platform={"architecture": a, "os": "linux"}) for a in ("arm64", "amd64")]}
write("oci_documents", "index.json", json.dumps(index).encode())

# attach_stream
def frame(kind, payload):
    return struct.pack(">BI", kind, len(payload)) + payload
write("attach_stream", "frames", frame(1, b"hello") + frame(4, struct.pack(">HH", 24, 80))
      + frame(3, json.dumps({"code": 3, "signal": None, "oom_killed": False}).encode()))
write("attach_stream", "huge-length", struct.pack(">BI", 1, 0xFFFFFFFF))
write("attach_stream", "unknown-kind", frame(9, b"x"))

# api_inputs
for name, body in {
    "create.json": {"image": "busybox", "name": "web", "command": ["sh", "-c", "true"],
                    "limits": {"memory": "64m", "cpus": "0.5", "pids": "100"},
                    "ports": ["8080:80/tcp"], "volumes": ["data:/data:ro"], "env": ["A=b"]},
    "exec.json": {"command": ["sh"], "tty": True, "env": ["A=b"], "workdir": "/", "user": "nobody"},
    "network.json": {"name": "back", "subnet": "10.90.0.0/24", "internal": True},
    "volume.json": {"name": "data", "size": "1g", "driver": "nfs", "options": {"server": "x"}},
}.items():
    write("api_inputs", name, json.dumps(body).encode())
for i, text in enumerate(["64m", "18446744073709551615k", "0.5", "1e309", "unlimited",
                          "127.0.0.1:8080:80/udp", "data:/x:ro", "/host:/x", "SIGKILL", "-1"]):
    write("api_inputs", f"value-{i}", text.encode())
