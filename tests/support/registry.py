"""A real OCI registry (Debian's ``docker-registry``, distribution 2.8) on loopback, and helpers that push
images into it through the registry HTTP API, built from files given in the test.

Four modes: ``tls`` (a certificate from a throwaway CA, htpasswd Basic auth), ``plain`` (HTTP, anonymous:
what KMM's ``registryTLS.insecure`` is for), ``token`` (TLS, docker token auth through
:class:`tests.support.tokenserver.TokenServer`) and ``plain-token`` (HTTP with token auth: its token
server, over TLS, records which credentials were sent to a registry reached over plain HTTP).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import shutil
import ssl
import subprocess
import tarfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urljoin

import urllib3
import yaml

from tests.support.controlplane import _die_with_parent, _tail, free_port, wait_for
from tests.support.pki import issue, make_ca
from tests.support.tokenserver import TokenServer

REGISTRY_BINARY = "docker-registry"
MODES = ("tls", "plain", "token", "plain-token")
TOKEN_MODES = ("token", "plain-token")


def registry_binary() -> str:
    found = shutil.which(REGISTRY_BINARY)
    if found is None:
        raise RuntimeError(f"{REGISTRY_BINARY} not found: install the Debian package docker-registry "
                           "(.ci/run does it)")
    return found


def auth_json(host: str, username: str, password: str) -> dict:
    """A containers auth.json / ``.dockerconfigjson`` holding one registry's credentials."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"auths": {host: {"auth": token}}}


def pull_secret(namespace: str, name: str, auth: dict) -> dict:
    """A ``kubernetes.io/dockerconfigjson`` Secret holding ``auth`` (an auth.json document)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": name, "namespace": namespace},
            "data": {".dockerconfigjson": base64.b64encode(json.dumps(auth).encode()).decode()}}


def dtk_release_files(kernel: str, rt_kernel: str | None = None, **fields: str) -> dict[str, bytes]:
    """The layer files of a synthetic DTK: ``/etc/driver-toolkit-release.json`` naming its kernels."""
    release = {"KERNEL_VERSION": kernel, **({"RT_KERNEL_VERSION": rt_kernel} if rt_kernel else {}), **fields}
    return {"etc/driver-toolkit-release.json": json.dumps(release).encode()}


class RegistryServer:
    """``docker-registry serve config.yml`` on 127.0.0.1:<free port>, storage and log in ``workdir``."""

    def __init__(self, workdir: Path, mode: str = "tls", *, username: str = "kmm-dtk-tester",
                 password: str = "s3cret-pa55word!", token_expires_in: int = 300) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.workdir = workdir
        self.mode = mode
        self.username = username
        self.password = password
        self.token_expires_in = token_expires_in
        self.port = 0
        self.ca_file: Path | None = None
        self.ca_key: Path | None = None
        self.token_server: TokenServer | None = None
        self._process: subprocess.Popen | None = None

    # -- addresses ---------------------------------------------------------------------------------

    @property
    def tls(self) -> bool:
        return self.mode not in ("plain", "plain-token")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "registry.log"

    @property
    def storage(self) -> Path:
        return self.workdir / "storage"

    def auth_json(self) -> dict:
        """An auth.json for this registry's credentials (the shape of a dockerconfigjson Secret)."""
        return auth_json(self.host, self.username, self.password)

    def blob_path(self, digest: str) -> Path:
        """Where filesystem storage keeps a blob (tests corrupt it there)."""
        algorithm, hexdigest = digest.split(":", 1)
        return self.storage / "docker/registry/v2/blobs" / algorithm / hexdigest[:2] / hexdigest / "data"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- lifecycle ---------------------------------------------------------------------------------

    def _config(self) -> dict:
        config: dict = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": "kmm-dtk-test-secret"},
        }
        if self.tls:
            cert, key = issue(self.workdir, self.ca_file, self.ca_key, "registry", "registry",
                              server_names=("127.0.0.1", "localhost"))
            config["http"]["tls"] = {"certificate": str(cert), "key": str(key)}
        if self.mode == "tls":
            import bcrypt  # the test extra; imported here so that importing this module needs nothing more

            htpasswd = self.workdir / "htpasswd"
            hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=5)).decode()
            htpasswd.write_text(f"{self.username}:{hashed}\n")
            config["auth"] = {"htpasswd": {"realm": "kmm-dtk-test", "path": str(htpasswd)}}
        elif self.mode in TOKEN_MODES:
            assert self.token_server is not None
            config["auth"] = {"token": {"realm": self.token_server.realm, "service": self.token_server.service,
                                        "issuer": self.token_server.issuer, "rootcertbundle": str(self.ca_file)}}
        return config

    def start(self, timeout: float = 30) -> RegistryServer:
        binary = registry_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        if (self.tls or self.mode in TOKEN_MODES) and self.ca_file is None:
            # a CA name of its own: two test CAs with one subject in a trust store fail each other's chains
            self.ca_file, self.ca_key = make_ca(self.workdir, f"registry-test-ca-{self.mode}")
        if self.mode in TOKEN_MODES and self.token_server is None:
            self.token_server = TokenServer(self.workdir, self.ca_file, self.ca_key, username=self.username,
                                            password=self.password, service="kmm-dtk-test-registry",
                                            issuer="kmm-dtk-test-token-issuer",
                                            expires_in=self.token_expires_in).start()
        config = self.workdir / "config.yml"
        config.write_text(yaml.safe_dump(self._config()))
        with open(self.log_path, "ab") as log_file:
            self._process = subprocess.Popen([binary, "serve", str(config)], stdout=log_file,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             cwd=self.workdir, preexec_fn=_die_with_parent)
        wait_for(self._answering, timeout, f"docker-registry on {self.host} to answer /v2/")
        return self

    def _answering(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise RuntimeError(f"docker-registry exited with status {self._process.returncode}:\n"
                               f"{_tail(self.log_path)}")
        request = urllib.request.Request(f"{self.url}/v2/")
        try:
            with urllib.request.urlopen(request, timeout=2, context=self.ssl_context() if self.tls else None):
                return True
        except urllib.error.HTTPError:
            return True  # 401: it answers, it wants credentials
        except urllib.error.URLError as err:
            if isinstance(err.reason, ssl.SSLError):
                raise
            return False

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return context

    def stop(self, grace: float = 10) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.token_server is not None:
            self.token_server.stop()
            self.token_server = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- raw API calls, as a pusher --------------------------------------------------------------

    def _authorization(self, repository: str) -> dict[str, str]:
        if self.mode == "tls":
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return {"Authorization": f"Basic {token}"}
        if self.mode in TOKEN_MODES:
            assert self.token_server is not None
            return {"Authorization": f"Bearer {self.token_server.mint([(repository, ['pull', 'push'])], 'pusher')}"}
        return {}

    def call(self, method: str, path_or_url: str, repository: str, *, body: bytes | None = None,
             headers: Mapping[str, str] = {}) -> urllib3.BaseHTTPResponse:
        """One API call with push rights on ``repository`` (no token-server round trip: not counted)."""
        pool = urllib3.PoolManager(ssl_context=self.ssl_context() if self.tls else None, retries=False)
        url = urljoin(self.url + "/", path_or_url.lstrip("/")) if "://" not in path_or_url else path_or_url
        return pool.request(method, url, body=body, headers={**self._authorization(repository), **headers},
                            redirect=False, timeout=30)


# -- images ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass(frozen=True)
class Hardlink:
    target: str


@dataclass(frozen=True)
class Directory:
    pass


LayerFiles = Mapping[str, bytes | Symlink | Hardlink | Directory]
NO_LABELS: Mapping[str, str] = MappingProxyType({})
NO_FILES: LayerFiles = MappingProxyType({})  # an image of one empty layer

MEDIA = {
    "docker": {
        "manifest": "application/vnd.docker.distribution.manifest.v2+json",
        "index": "application/vnd.docker.distribution.manifest.list.v2+json",
        "config": "application/vnd.docker.container.image.v1+json",
        "layer": "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "layer-tar": "application/vnd.docker.image.rootfs.diff.tar",
    },
    "oci": {
        "manifest": "application/vnd.oci.image.manifest.v1+json",
        "index": "application/vnd.oci.image.index.v1+json",
        "config": "application/vnd.oci.image.config.v1+json",
        "layer": "application/vnd.oci.image.layer.v1.tar+gzip",
        "layer-tar": "application/vnd.oci.image.layer.v1.tar",
    },
}
OTHER_PLATFORM = ("linux", "arm64")
OTHER_PLATFORM_LABEL = "test.kmm-dtk/platform"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layer(files: LayerFiles, *, compress: bool = True) -> tuple[bytes, str]:
    """(blob, diff_id) of a tar layer holding ``files``; parent directories are added as entries."""
    raw = io.BytesIO()
    explicit = {path.strip("/") for path in files}
    parents = sorted({"/".join(p.strip("/").split("/")[:i])
                      for p in files for i in range(1, p.strip("/").count("/") + 1)} - explicit)
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in parents:
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path, content in files.items():
            info = tarfile.TarInfo(path.strip("/"))
            info.mtime, info.mode = 0, 0o644
            if isinstance(content, Symlink):
                info.type, info.linkname = tarfile.SYMTYPE, content.target
                tar.addfile(info)
            elif isinstance(content, Hardlink):
                info.type, info.linkname = tarfile.LNKTYPE, content.target
                tar.addfile(info)
            elif isinstance(content, Directory):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    data = raw.getvalue()
    return (gzip.compress(data, mtime=0) if compress else data), sha256(data)


def push_blob(server: RegistryServer, repository: str, blob: bytes) -> str:
    """Monolithic upload: POST to open an upload, PUT the bytes with their digest."""
    digest = sha256(blob)
    started = server.call("POST", f"/v2/{repository}/blobs/uploads/", repository)
    if started.status != 202:
        raise RuntimeError(f"blob upload to {repository} not started: {started.status} {started.data[:300]!r}")
    location = started.headers["Location"]
    location += ("&" if "?" in location else "?") + f"digest={digest}"
    done = server.call("PUT", location, repository, body=blob,
                       headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(blob))})
    if done.status != 201:
        raise RuntimeError(f"blob upload to {repository} failed: {done.status} {done.data[:300]!r}")
    return digest


def push_manifest(server: RegistryServer, repository: str, reference: str, body: bytes, media_type: str) -> str:
    response = server.call("PUT", f"/v2/{repository}/manifests/{reference}", repository, body=body,
                           headers={"Content-Type": media_type})
    if response.status != 201:
        raise RuntimeError(f"manifest push to {repository}:{reference} failed: {response.status} "
                           f"{response.data[:500]!r}")
    return sha256(body)


def delete_manifest(server: RegistryServer, repository: str, digest: str) -> None:
    """Delete a manifest by digest, as a registry cleanup does (the storage config enables deletion):
    the tags pointing at it answer 404 ``MANIFEST_UNKNOWN`` from then on."""
    response = server.call("DELETE", f"/v2/{repository}/manifests/{digest}", repository)
    if response.status != 202:
        raise RuntimeError(f"manifest delete of {repository}@{digest} failed: {response.status} "
                           f"{response.data[:300]!r}")


@dataclass(frozen=True)
class PushedImage:
    host: str
    repository: str
    tag: str
    digest: str  # what the tag points at: the index when index=True
    manifest_digest: str  # the linux/amd64 image manifest
    config_digest: str
    layers: tuple[str, ...]
    media_type: str  # of what the tag points at
    platform_digests: Mapping[str, str] = field(default_factory=dict)  # "linux/arm64" -> digest (index only)

    @property
    def pull_spec(self) -> str:
        return f"{self.host}/{self.repository}@{self.digest}"

    @property
    def tag_spec(self) -> str:
        return f"{self.host}/{self.repository}:{self.tag}"


def _push_platform_image(server: RegistryServer, repository: str, reference: str | None,
                         media: Mapping[str, str], layers: Sequence[LayerFiles], labels: Mapping[str, str],
                         platform: tuple[str, str], compress: bool) -> tuple[str, str, tuple[str, ...], int]:
    """(manifest digest, config digest, layer digests, manifest size); untagged (by digest) when
    ``reference`` is None, as the platform images of an index are."""
    layer_entries, diff_ids = [], []
    for files in layers:
        blob, diff_id = make_layer(files, compress=compress)
        layer_entries.append({"mediaType": media["layer" if compress else "layer-tar"], "size": len(blob),
                              "digest": push_blob(server, repository, blob)})
        diff_ids.append(diff_id)
    config = {
        "architecture": platform[1], "os": platform[0],
        "config": {"Labels": dict(labels) if labels else None, "Env": ["PATH=/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "kmm-dtk tests"} for _ in diff_ids],
    }
    config_blob = json.dumps(config, sort_keys=True).encode()
    config_digest = push_blob(server, repository, config_blob)
    manifest = {
        "schemaVersion": 2, "mediaType": media["manifest"],
        "config": {"mediaType": media["config"], "size": len(config_blob), "digest": config_digest},
        "layers": layer_entries,
    }
    body = json.dumps(manifest, indent=2).encode()
    digest = push_manifest(server, repository, reference or sha256(body), body, media["manifest"])
    return digest, config_digest, tuple(entry["digest"] for entry in layer_entries), len(body)


def push_image(server: RegistryServer, repository: str, tag: str, *, labels: Mapping[str, str] = NO_LABELS,
               files: LayerFiles | Sequence[LayerFiles] = NO_FILES, media: str = "docker", index: bool = False,
               compress: bool = True) -> PushedImage:
    """Push a linux/amd64 image whose layers hold ``files`` (one dict per layer, bottom first; a single
    dict is one layer) and whose config carries ``labels``. With ``index``, the tag names an image index
    (manifest list) of that image and a linux/arm64 one labelled ``OTHER_PLATFORM_LABEL``."""
    kinds = MEDIA[media]
    layers = [files] if isinstance(files, Mapping) else list(files)
    if not index:
        digest, config_digest, layer_digests, _ = _push_platform_image(
            server, repository, tag, kinds, layers, labels, ("linux", "amd64"), compress)
        return PushedImage(server.host, repository, tag, digest, digest, config_digest, layer_digests,
                           kinds["manifest"])
    entries, platform_digests = [], {}
    first: tuple[str, str, tuple[str, ...]] | None = None
    for platform, platform_labels in ((("linux", "amd64"), labels),
                                      (OTHER_PLATFORM, {**labels, OTHER_PLATFORM_LABEL: "/".join(OTHER_PLATFORM)})):
        digest, config_digest, layer_digests, size = _push_platform_image(
            server, repository, None, kinds, layers, platform_labels, platform, compress)
        platform_digests["/".join(platform)] = digest
        entries.append({"mediaType": kinds["manifest"], "size": size, "digest": digest,
                        "platform": {"os": platform[0], "architecture": platform[1]}})
        if first is None:
            first = (digest, config_digest, layer_digests)
    body = json.dumps({"schemaVersion": 2, "mediaType": kinds["index"], "manifests": entries}, indent=2).encode()
    index_digest = push_manifest(server, repository, tag, body, kinds["index"])
    assert first is not None
    return PushedImage(server.host, repository, tag, index_digest, first[0], first[1], first[2], kinds["index"],
                       platform_digests)

