"""Where the API server is and who we are: kubeconfig files or the pod's ServiceAccount.

The operator's own loader, so that it never imports the ``kubernetes`` package (its typed models
cost ~60 MiB of resident memory for nothing the operator uses). Files are read through the bounded
YAML reader. Every problem is a :class:`KubeConfigError` whose text is one line naming the file,
the field and the fix. Credentials that change (a rotated token file, an exec plugin's expiring
token) live in :mod:`kmm_dtk.kube.credentials`; this module only says which one applies.
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from kmm_dtk.kube.credentials import (
    BasicAuth,
    Credential,
    CredentialError,
    ExecPlugin,
    StaticToken,
    TokenFile,
)

IN_CLUSTER_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
MAX_FILE_BYTES = 4 << 20  # a kubeconfig, CA bundle or token larger than this is not one
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
CONFIG_HINT = "pass --kubeconfig FILE, set $KUBECONFIG, or run in a pod with a ServiceAccount"


class KubeConfigError(ValueError):
    """The cluster connection cannot be configured; ``str()`` is one line with the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


@dataclass
class ConnectionSettings:
    """Everything needed to reach and authenticate to one API server."""

    server: str  # scheme://host[:port][/prefix], no trailing slash
    source: str  # the kubeconfig file(s) or "in-cluster config (DIR)", for messages
    ca_pem: bytes | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    proxy_url: str | None = None
    cert_pem: bytes | None = None  # a client certificate from the kubeconfig (an exec plugin's comes later)
    key_pem: bytes | None = None
    credential: Credential | None = None
    namespace: str | None = None  # the context's (or the pod's) namespace
    context: str | None = None
    cluster_info: dict[str, Any] = field(default_factory=dict)  # for exec plugins' provideClusterInfo

    def ssl_context(self, client_cert: tuple[bytes, bytes] | None = None) -> ssl.SSLContext:
        """TLS for this server: its CA (or the system's), and the client certificate if any."""
        try:
            context = ssl.create_default_context(cadata=self.ca_pem.decode("ascii", "replace")
                                                 if self.ca_pem else None)
        except (ssl.SSLError, ValueError) as err:
            raise KubeConfigError(f"{self.source}: the certificate authority cannot be loaded ({_ssl_reason(err)}); "
                                  "give a PEM CA bundle") from None
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        pair = client_cert or ((self.cert_pem, self.key_pem) if self.cert_pem and self.key_pem else None)
        if pair is not None:
            load_client_cert(context, pair[0], pair[1], self.source)
        return context


def load_client_cert(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes, source: str) -> None:
    """ssl only loads client certificates from files: write them to a private directory (0700,
    files 0600) just long enough to load them."""
    with tempfile.TemporaryDirectory(prefix="kmm-dtk-cert-") as folder:
        cert_path, key_path = os.path.join(folder, "tls.crt"), os.path.join(folder, "tls.key")
        for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        try:
            context.load_cert_chain(cert_path, key_path)
        except (ssl.SSLError, ValueError) as err:
            raise KubeConfigError(f"{source}: the client certificate and key cannot be loaded "
                                  f"({_ssl_reason(err)}); give a matching PEM certificate and key") from None


def _ssl_reason(err: Exception) -> str:
    reason = getattr(err, "reason", None) or str(err)
    return str(reason).lower().replace("_", " ")


def load_settings(kubeconfig: str | None = None, context: str | None = None, *,
                  environ: Mapping[str, str] | None = None, in_cluster_dir: str = IN_CLUSTER_DIR) -> ConnectionSettings:
    """In-cluster config inside a pod (unless a kubeconfig is named, or $KUBECONFIG is set), else the
    kubeconfig: ``kubeconfig``, the files of $KUBECONFIG merged, or ~/.kube/config."""
    env = os.environ if environ is None else environ
    if kubeconfig is None and env.get("KUBERNETES_SERVICE_HOST") and not env.get("KUBECONFIG"):
        return load_in_cluster(env, in_cluster_dir)
    return load_kubeconfig(kubeconfig_paths(kubeconfig, env), context, explicit=kubeconfig is not None)


def kubeconfig_paths(kubeconfig: str | None, environ: Mapping[str, str]) -> list[str]:
    """The files to read, in precedence order."""
    if kubeconfig is not None:
        return [kubeconfig]
    listed = [p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        return listed
    home = environ.get("HOME") or os.path.expanduser("~")
    return [os.path.join(home, ".kube", "config")]


# -- in-cluster -------------------------------------------------------------------------------------


def load_in_cluster(environ: Mapping[str, str], base_dir: str = IN_CLUSTER_DIR) -> ConnectionSettings:
    """The pod's ServiceAccount: the service's address, its CA, its token (re-read as it rotates)."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST", ""), environ.get("KUBERNETES_SERVICE_PORT", "")
    source = f"in-cluster config ({base_dir})"
    if not host or not port:
        raise KubeConfigError(f"{source}: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must both be set; "
                              "run in a pod or pass --kubeconfig FILE")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    ca_path = os.path.join(base_dir, "ca.crt")
    ca_pem = _read(ca_path, f"{source}: ca.crt", "mount the ServiceAccount's CA or pass --kubeconfig FILE")
    token_path = os.path.join(base_dir, "token")
    credential = _token_file(token_path, f"{source}: token", "mount a ServiceAccount token or pass --kubeconfig FILE")
    namespace = None
    try:
        with open(os.path.join(base_dir, "namespace"), "rb") as f:
            namespace = f.read(256).decode("utf-8", "replace").strip() or None
    except OSError:
        pass
    return ConnectionSettings(server=f"https://{host}:{port}", source=source, ca_pem=ca_pem,
                              credential=credential, namespace=namespace,
                              cluster_info={"server": f"https://{host}:{port}"})


# -- kubeconfig files -------------------------------------------------------------------------------


@dataclass
class _Entry:
    """A named cluster, user or context, with the file that defined it (relative paths start there)."""

    body: Mapping[str, Any]
    path: str
    where: str  # e.g. users[admin].user


def _read(path: str, what: str, fix: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise KubeConfigError(f"{what}: cannot read {path} ({(err.strerror or str(err)).lower()}); {fix}") from None
    if len(data) > MAX_FILE_BYTES:
        raise KubeConfigError(f"{what}: {path} is larger than {MAX_FILE_BYTES} bytes; {fix}")
    return data


def _token_file(path: str, what: str, fix: str) -> TokenFile:
    try:
        return TokenFile(path)
    except CredentialError as err:
        raise KubeConfigError(f"{what}: {err}; {fix}") from None


def _parse_file(path: str) -> Mapping[str, Any]:
    from kmm_dtk.core.untrusted import UntrustedInputError, load_yaml_all

    data = _read(path, "kubeconfig", CONFIG_HINT)
    try:
        documents = [d for d in load_yaml_all(data, what=path) if d is not None]
    except UntrustedInputError as err:
        raise KubeConfigError(f"{err}; fix the kubeconfig") from None
    if not documents:
        return {}
    if len(documents) > 1 or not isinstance(documents[0], Mapping):
        raise KubeConfigError(f"{path}: not a kubeconfig (expected one mapping with clusters, users and contexts)")
    return documents[0]


def _merge(paths: list[str], explicit: bool) -> tuple[dict[str, dict[str, _Entry]], str, str]:
    """kubectl's merge: the first file that sets a name (or current-context) wins."""
    named: dict[str, dict[str, _Entry]] = {"clusters": {}, "users": {}, "contexts": {}}
    current, current_from, found = "", "", []
    for path in paths:
        if not explicit and not os.path.exists(path):
            continue  # kubectl skips missing files of $KUBECONFIG
        found.append(path)
        raw = _parse_file(path)
        for section, inner in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            entries = raw.get(section) or []
            if not isinstance(entries, list):
                raise KubeConfigError(f"{path}: {section} must be a list of {{name, {inner}}}; fix the kubeconfig")
            for index, item in enumerate(entries):
                name = item.get("name") if isinstance(item, Mapping) else None
                if not isinstance(name, str) or not name:
                    raise KubeConfigError(f"{path}: {section}[{index}].name must be a non-empty string; "
                                          "fix the kubeconfig")
                body = item.get(inner) or {}
                if not isinstance(body, Mapping):
                    raise KubeConfigError(f"{path}: {section}[{name}].{inner} must be a mapping; fix the kubeconfig")
                named[section].setdefault(name, _Entry(body, path, f"{section}[{name}].{inner}"))
        cur = raw.get("current-context")
        if not current and isinstance(cur, str) and cur:
            current, current_from = cur, path
    if not found:
        raise KubeConfigError(f"no kubeconfig found (tried {', '.join(paths)}); {CONFIG_HINT}")
    return named, current, current_from or found[0]


def load_kubeconfig(paths: list[str], context: str | None = None, *, explicit: bool = True) -> ConnectionSettings:
    """The settings of ``context`` (else current-context) of the kubeconfig files ``paths`` merged."""
    named, current, current_from = _merge(paths, explicit)
    source = paths[0] if len(paths) == 1 else current_from
    name = context or current
    choices = ", ".join(sorted(named["contexts"])) or "none"
    if not name:
        raise KubeConfigError(f"{source}: no current-context is set; pass --context NAME (contexts: {choices})")
    ctx = named["contexts"].get(name)
    if ctx is None:
        raise KubeConfigError(f"{source}: context {name!r} not found (contexts: {choices}); "
                              "pass --context with one of them")
    cluster_name = _string(ctx, "cluster")
    user_name = _string(ctx, "user")
    if not cluster_name:
        raise KubeConfigError(f"{ctx.path}: {ctx.where}.cluster is not set; name a cluster in the context")
    cluster = named["clusters"].get(cluster_name)
    if cluster is None:
        raise KubeConfigError(f"{ctx.path}: {ctx.where}.cluster names {cluster_name!r}, which is not in clusters; "
                              "add it or fix the context")
    user = named["users"].get(user_name) if user_name else _Entry({}, ctx.path, "users[].user")
    if user is None:
        raise KubeConfigError(f"{ctx.path}: {ctx.where}.user names {user_name!r}, which is not in users; "
                              "add it or fix the context")
    settings = _cluster_settings(cluster)
    settings.context = name
    namespace = _string(ctx, "namespace")
    settings.namespace = namespace or None
    _user_settings(user, settings)
    return settings


def _string(entry: _Entry, key: str) -> str:
    value = entry.body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise KubeConfigError(f"{entry.path}: {entry.where}.{key} must be a string; fix the kubeconfig")
    return value


def _resolve(entry: _Entry, value: str) -> str:
    path = os.path.expanduser(value)
    return path if os.path.isabs(path) else os.path.join(os.path.dirname(os.path.abspath(entry.path)), path)


def _data(entry: _Entry, key: str) -> bytes | None:
    """``key``-data (base64) if set, else the file ``key`` names, else None."""
    inline = _string(entry, f"{key}-data")
    if inline:
        try:
            return base64.b64decode("".join(inline.split()), validate=True)
        except (binascii.Error, ValueError):
            raise KubeConfigError(f"{entry.path}: {entry.where}.{key}-data is not valid base64; "
                                  "encode the PEM with base64 -w0") from None
    named = _string(entry, key)
    if named:
        return _read(_resolve(entry, named), f"{entry.path}: {entry.where}.{key}", "fix the path")
    return None


def _cluster_settings(cluster: _Entry) -> ConnectionSettings:
    where = f"{cluster.path}: {cluster.where}"
    server = _string(cluster, "server").rstrip("/")
    parts = urlsplit(server)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise KubeConfigError(f"{where}.server must be a URL like https://api.example.com:6443 "
                              f"(got {server!r}); fix the cluster")
    insecure = cluster.body.get("insecure-skip-tls-verify", False)
    if not isinstance(insecure, bool):
        raise KubeConfigError(f"{where}.insecure-skip-tls-verify must be true or false; fix the cluster")
    ca_pem = _data(cluster, "certificate-authority")
    if insecure and ca_pem:
        raise KubeConfigError(f"{where}: insecure-skip-tls-verify and a certificate-authority are both set; "
                              "remove one")
    proxy = _string(cluster, "proxy-url") or None
    if proxy is not None:
        proxy_parts = urlsplit(proxy)
        if proxy_parts.scheme not in ("http", "https") or not proxy_parts.hostname:
            raise KubeConfigError(f"{where}.proxy-url {proxy!r} is not supported; use an http:// or https:// proxy")
    tls_server_name = _string(cluster, "tls-server-name") or None
    info: dict[str, Any] = {"server": server, "insecure-skip-tls-verify": insecure}
    if ca_pem:
        info["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    if tls_server_name:
        info["tls-server-name"] = tls_server_name
    if proxy:
        info["proxy-url"] = proxy
    extensions = cluster.body.get("extensions")
    if isinstance(extensions, list):
        for ext in extensions:
            if isinstance(ext, Mapping) and ext.get("name") == "client.authentication.k8s.io/exec":
                info["config"] = ext.get("extension")
    return ConnectionSettings(server=server, source=cluster.path, ca_pem=ca_pem, insecure=insecure,
                              tls_server_name=tls_server_name, proxy_url=proxy, cluster_info=info)


def _user_settings(user: _Entry, settings: ConnectionSettings) -> None:
    where = f"{user.path}: {user.where}"
    if user.body.get("auth-provider") is not None:
        raise KubeConfigError(f"{where}.auth-provider is not supported; use an exec plugin or a token")
    settings.cert_pem = _data(user, "client-certificate")
    settings.key_pem = _data(user, "client-key")
    if bool(settings.cert_pem) != bool(settings.key_pem):
        raise KubeConfigError(f"{where}: client-certificate and client-key must be given together; add the other")
    token, token_file = _string(user, "token"), _string(user, "tokenFile")
    username, password = _string(user, "username"), _string(user, "password")
    exec_spec = user.body.get("exec")
    if exec_spec is not None:
        settings.credential = _exec_plugin(user, exec_spec, settings)
    elif token:
        settings.credential = StaticToken(token)
    elif token_file:
        settings.credential = _token_file(_resolve(user, token_file), f"{where}.tokenFile", "fix the path")
    elif username or password:
        settings.credential = BasicAuth(username, password)


def _exec_plugin(user: _Entry, spec: Any, settings: ConnectionSettings) -> ExecPlugin:
    where = f"{user.path}: {user.where}.exec"
    if not isinstance(spec, Mapping):
        raise KubeConfigError(f"{where} must be a mapping with apiVersion and command; fix the user")
    api_version = spec.get("apiVersion")
    if api_version not in EXEC_API_VERSIONS:
        raise KubeConfigError(f"{where}.apiVersion {api_version!r} is not supported; use "
                              f"{' or '.join(EXEC_API_VERSIONS)}")
    command = spec.get("command")
    if not isinstance(command, str) or not command:
        raise KubeConfigError(f"{where}.command must be set; name the credential plugin to run")
    args = spec.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise KubeConfigError(f"{where}.args must be a list of strings; fix the user")
    env: dict[str, str] = {}
    for index, item in enumerate(spec.get("env") or []):
        if not (isinstance(item, Mapping) and isinstance(item.get("name"), str)
                and isinstance(item.get("value", ""), str)):
            raise KubeConfigError(f"{where}.env[{index}] must have a string name and value; fix the user")
        env[item["name"]] = item.get("value", "")
    mode = spec.get("interactiveMode") or "IfAvailable"
    if mode not in ("Never", "IfAvailable", "Always"):
        raise KubeConfigError(f"{where}.interactiveMode {mode!r} is not one of Never, IfAvailable, Always")
    if mode == "Always":
        raise KubeConfigError(f"{where}.interactiveMode Always needs a terminal, which kmm-dtk never gives; "
                              "use IfAvailable or Never")
    if os.sep in command and not os.path.isabs(command):
        command = _resolve(user, command)  # like client-go: relative to the kubeconfig's folder
    if shutil.which(command) is None:
        hint = spec.get("installHint")
        fix = " ".join(str(hint).split()) if isinstance(hint, str) and hint.strip() else "install it or fix the path"
        raise KubeConfigError(f"{where}.command {command!r} was not found; {fix}")
    cluster = settings.cluster_info if spec.get("provideClusterInfo") is True else None
    return ExecPlugin(api_version, [command, *args], env, cluster=cluster, what=f"exec plugin {command!r}")
