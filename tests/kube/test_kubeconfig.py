"""The operator's own kubeconfig / in-cluster loading and connection, against the real control plane:
each way of authenticating is proven by asking the API server who we are (SelfSubjectReview)."""

from __future__ import annotations

import base64
import json
import os
import socket
import socketserver
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import pytest
import yaml

from kmm_dtk.kube.client import ApiError, KubeClient, Resource, load_api_client
from kmm_dtk.kube.connection import Connection
from kmm_dtk.kube.credentials import TokenFile
from kmm_dtk.kube.kubeconfig import ConnectionSettings, KubeConfigError, load_in_cluster, load_settings
from tests.support.controlplane import free_port
from tests.support.loopback import CountingListener

REPO = Path(__file__).resolve().parents[2]
CONFIGMAPS = Resource("", "v1", "configmaps", kind="ConfigMap")


def whoami(connection: Connection) -> str:
    review = KubeClient(connection, timeout=(5, 10)).request(
        "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    return str(review["status"]["userInfo"]["username"])


def write_config(path: Path, cluster: dict, user: dict, *, namespace: str | None = None, extra: dict | None = None,
                 current: str = "main") -> Path:
    context = {"cluster": "c", "user": "u", **({"namespace": namespace} if namespace else {})}
    config = {"apiVersion": "v1", "kind": "Config", "current-context": current,
              "clusters": [{"name": "c", "cluster": cluster}], "users": [{"name": "u", "user": user}],
              "contexts": [{"name": "main", "context": context}], **(extra or {})}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def admin(cluster) -> dict:
    """The fixture kubeconfig's cluster and user entries (client certificate files)."""
    raw = yaml.safe_load(cluster.kubeconfig.read_text())
    user = raw["users"][0]["user"]
    if "client-certificate" not in user:
        pytest.skip("needs a kubeconfig with a client certificate (the project's own control plane)")
    return {"cluster": raw["clusters"][0]["cluster"], "user": user}


def mint_token(api, namespace: str, name: str) -> str:
    kube = KubeClient(api)
    kube.create(Resource("", "v1", "serviceaccounts"), {"metadata": {"name": name}}, namespace)
    answer = kube.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                          body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                "spec": {"expirationSeconds": 3600}})
    return str(answer["status"]["token"])


def sa_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


# -- client certificates -------------------------------------------------------------------------


def test_client_certificate_files_and_inline_data_authenticate(admin, tmp_path):
    by_file = load_api_client(str(write_config(tmp_path / "files", admin["cluster"], admin["user"])))
    expected = whoami(by_file)
    assert expected  # the certificate's CN

    cluster = {"server": admin["cluster"]["server"],
               "certificate-authority-data": base64.b64encode(Path(admin["cluster"]["certificate-authority"])
                                                              .read_bytes()).decode()}
    user = {f"{key}-data": base64.b64encode(Path(admin["user"][key]).read_bytes()).decode()
            for key in ("client-certificate", "client-key")}
    inline = load_api_client(str(write_config(tmp_path / "inline", cluster, user)))
    assert whoami(inline) == expected
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("kmm-dtk-cert-*/tls.key")), "key left on disk"


def test_relative_paths_resolve_against_the_kubeconfigs_folder(admin, tmp_path):
    folder = tmp_path / "conf"
    folder.mkdir()
    for key, name in (("client-certificate", "tls.crt"), ("client-key", "tls.key")):
        (folder / name).write_bytes(Path(admin["user"][key]).read_bytes())
    (folder / "ca.crt").write_bytes(Path(admin["cluster"]["certificate-authority"]).read_bytes())
    path = write_config(folder / "config", {"server": admin["cluster"]["server"], "certificate-authority": "ca.crt"},
                        {"client-certificate": "tls.crt", "client-key": "./tls.key"})
    os.chdir(tmp_path)  # not the kubeconfig's folder: relative paths must not depend on it
    try:
        assert whoami(load_api_client(str(path)))
    finally:
        os.chdir(REPO)


# -- tokens ---------------------------------------------------------------------------------------


def test_token_user_and_the_contexts_namespace(api, admin, namespace, tmp_path):
    token = mint_token(api, namespace, "reader")
    path = write_config(tmp_path / "token", admin["cluster"], {"token": token}, namespace=namespace)
    connection = load_api_client(str(path))
    assert whoami(connection) == sa_user(namespace, "reader")
    assert connection.namespace == namespace


def test_a_rotated_token_file_is_read_again_after_a_minute_and_after_a_401(api, admin, namespace, tmp_path):
    first, second = mint_token(api, namespace, "first"), mint_token(api, namespace, "second")
    token_file = tmp_path / "token"
    token_file.write_text("not-a-valid-token\n")
    path = write_config(tmp_path / "config", admin["cluster"], {"tokenFile": "token"})
    connection = load_api_client(str(path))
    # The file changed after loading: the 401 for the old token re-reads it and a read is sent again.
    token_file.write_text(first)
    assert KubeClient(connection).request("GET", "/version")["major"]
    assert whoami(connection) == sa_user(namespace, "first")

    # A write refused with 401 is not sent again, but the next one carries the re-read token.
    token_file.write_text("not-a-valid-token\n")
    connection = load_api_client(str(path))
    token_file.write_text(first)
    with pytest.raises(ApiError) as caught:
        whoami(connection)  # a POST
    assert caught.value.status == 401
    assert whoami(connection) == sa_user(namespace, "first")

    now = [0.0]
    settings = load_settings(str(path))
    settings.credential = TokenFile(str(token_file), reread=60, clock=lambda: now[0])
    connection = Connection(settings)
    token_file.write_text(second)
    now[0] = 59.0
    assert whoami(connection) == sa_user(namespace, "first")
    now[0] = 60.5
    assert whoami(connection) == sa_user(namespace, "second")


def test_a_bad_token_is_a_401_api_error(admin, tmp_path):
    connection = load_api_client(str(write_config(tmp_path / "c", admin["cluster"], {"token": "nope"})))
    with pytest.raises(ApiError) as caught:
        whoami(connection)
    assert caught.value.status == 401


# -- exec plugins ---------------------------------------------------------------------------------

PLUGIN = textwrap.dedent("""\
    import json, os, sys
    state = sys.argv[1]
    with open(os.path.join(state, "runs"), "a") as f:
        f.write(os.environ["KUBERNETES_EXEC_INFO"] + "\\n")
    with open(os.path.join(state, "token")) as f:
        token = f.read().strip()
    status = {"token": token, "expirationTimestamp": os.environ["PLUGIN_EXPIRES"]}
    print(json.dumps({"apiVersion": os.environ["PLUGIN_VERSION"], "kind": "ExecCredential", "status": status}))
""")


def exec_user(tmp_path: Path, version: str, expires: str, **extra) -> dict:
    (tmp_path / "plugin.py").write_text(PLUGIN)
    return {"exec": {"apiVersion": version, "command": sys.executable, "args": [str(tmp_path / "plugin.py"),
                                                                                 str(tmp_path)],
                     "env": [{"name": "PLUGIN_VERSION", "value": version},
                             {"name": "PLUGIN_EXPIRES", "value": expires}],
                     "interactiveMode": "Never", **extra}}


def runs(tmp_path: Path) -> list[dict]:
    path = tmp_path / "runs"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("version", ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"])
def test_an_exec_plugins_token_is_cached_until_a_401_then_the_plugin_runs_again(api, admin, namespace, tmp_path,
                                                                                version):
    (tmp_path / "token").write_text(mint_token(api, namespace, "one"))
    user = exec_user(tmp_path, version, "2999-01-01T00:00:00Z", provideClusterInfo=True)
    connection = load_api_client(str(write_config(tmp_path / "config", admin["cluster"], user)))
    assert runs(tmp_path) == []  # nothing runs before the first request
    assert whoami(connection) == sa_user(namespace, "one")
    assert whoami(connection) == sa_user(namespace, "one")
    info = runs(tmp_path)
    assert len(info) == 1
    assert info[0]["apiVersion"] == version and info[0]["spec"]["interactive"] is False
    assert info[0]["spec"]["cluster"]["server"] == admin["cluster"]["server"]

    (tmp_path / "token").write_text(mint_token(api, namespace, "two"))
    KubeClient(api).delete(Resource("", "v1", "serviceaccounts"), "one", namespace)  # its token stops working
    assert wait_for_user(connection, sa_user(namespace, "two"))
    assert len(runs(tmp_path)) == 2


def wait_for_user(connection: Connection, user: str) -> bool:
    """The deleted ServiceAccount's token is refused once the API server's token cache notices."""
    from tests.support.controlplane import wait_until

    def sees() -> bool:
        try:
            return whoami(connection) == user
        except ApiError:
            return False
    return wait_until(sees, timeout=15, interval=0.2)


def test_an_expired_exec_credential_runs_the_plugin_for_every_request(api, admin, namespace, tmp_path):
    (tmp_path / "token").write_text(mint_token(api, namespace, "short"))
    user = exec_user(tmp_path, "client.authentication.k8s.io/v1", "2000-01-01T00:00:00Z")
    connection = load_api_client(str(write_config(tmp_path / "config", admin["cluster"], user)))
    whoami(connection)
    whoami(connection)
    assert len(runs(tmp_path)) == 2
    assert "cluster" not in runs(tmp_path)[0]["spec"]  # provideClusterInfo not asked for


def test_a_failing_exec_plugin_is_a_clean_api_error(admin, tmp_path):
    script = tmp_path / "fail.py"
    script.write_text("import sys\nprint('login expired, run sso-login', file=sys.stderr)\nsys.exit(3)\n")
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": sys.executable,
                     "args": [str(script)], "interactiveMode": "Never"}}
    connection = load_api_client(str(write_config(tmp_path / "config", admin["cluster"], user)))
    with pytest.raises(ApiError) as caught:
        whoami(connection)
    assert caught.value.status == 0
    assert "failed (exit 3): login expired, run sso-login" in caught.value.message


# -- in-cluster -----------------------------------------------------------------------------------


def test_in_cluster_config_from_a_mounted_service_account(api, admin, namespace, tmp_path):
    mount = tmp_path / "serviceaccount"
    mount.mkdir()
    (mount / "ca.crt").write_bytes(Path(admin["cluster"]["certificate-authority"]).read_bytes())
    (mount / "token").write_text(mint_token(api, namespace, "pod"))
    (mount / "namespace").write_text(namespace)
    host, port = admin["cluster"]["server"].removeprefix("https://").rsplit(":", 1)
    env = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port, "HOME": str(tmp_path)}
    settings = load_settings(environ=env, in_cluster_dir=str(mount))
    assert settings.namespace == namespace
    assert whoami(Connection(settings)) == sa_user(namespace, "pod")

    # $KUBECONFIG set, or a kubeconfig named: the kubeconfig wins over the pod's config
    config = write_config(tmp_path / "config", admin["cluster"], admin["user"], namespace="elsewhere")
    assert load_settings(environ={**env, "KUBECONFIG": str(config)}, in_cluster_dir=str(mount)).namespace == "elsewhere"
    assert load_settings(str(config), environ=env, in_cluster_dir=str(mount)).namespace == "elsewhere"


def test_in_cluster_ipv6_host_is_bracketed_and_missing_files_are_one_line(tmp_path):
    (tmp_path / "ca.crt").write_text("x")
    (tmp_path / "token").write_text("t")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    assert load_in_cluster(env, str(tmp_path)).server == "https://[fd00::1]:443"
    (tmp_path / "token").unlink()
    with pytest.raises(KubeConfigError) as caught:
        load_in_cluster(env, str(tmp_path))
    assert str(caught.value) == (f"in-cluster config ({tmp_path}): token: cannot read {tmp_path}/token "
                                 "(no such file or directory); mount a ServiceAccount token or pass --kubeconfig FILE")


# -- merging and contexts -------------------------------------------------------------------------


def test_kubeconfig_list_merges_first_file_wins_and_context_selects(admin, tmp_path):
    dead = f"https://127.0.0.1:{free_port()}"
    first = tmp_path / "first"
    first.write_text(yaml.safe_dump({
        "current-context": "live",
        "clusters": [{"name": "live", "cluster": admin["cluster"]}],
        "contexts": [{"name": "live", "context": {"cluster": "live", "user": "admin", "namespace": "from-first"}}],
    }))
    second = tmp_path / "second"
    second.write_text(yaml.safe_dump({
        "current-context": "dead",
        "clusters": [{"name": "live", "cluster": {"server": dead}}, {"name": "dead", "cluster": {"server": dead}}],
        "users": [{"name": "admin", "user": admin["user"]}],
        "contexts": [{"name": "live", "context": {"cluster": "dead", "user": "admin", "namespace": "from-second"}},
                     {"name": "dead", "context": {"cluster": "dead", "user": "admin"}}],
    }))
    env = {"KUBECONFIG": os.pathsep.join([str(first), str(tmp_path / "missing"), str(second)]), "HOME": str(tmp_path)}
    settings = load_settings(environ=env)
    assert (settings.context, settings.namespace, settings.server) == ("live", "from-first",
                                                                        admin["cluster"]["server"])
    assert whoami(Connection(settings))  # the user comes from the second file
    other = load_settings(context="dead", environ=env)
    assert other.server == dead and other.namespace is None


# -- bad input: one line naming the file, the field and the fix ------------------------------------


def test_missing_kubeconfigs_name_what_was_tried(tmp_path):
    with pytest.raises(KubeConfigError) as caught:
        load_settings(str(tmp_path / "nope"), environ={})
    assert str(caught.value) == (f"kubeconfig: cannot read {tmp_path}/nope (no such file or directory); pass "
                                 "--kubeconfig FILE, set $KUBECONFIG, or run in a pod with a ServiceAccount")
    with pytest.raises(KubeConfigError) as caught:
        load_settings(environ={"HOME": str(tmp_path)})
    assert str(caught.value) == (f"no kubeconfig found (tried {tmp_path}/.kube/config); pass --kubeconfig FILE, "
                                 "set $KUBECONFIG, or run in a pod with a ServiceAccount")


@pytest.mark.parametrize("user, context, expected", [
    ({"auth-provider": {"name": "oidc"}}, None,
     "{path}: users[u].user.auth-provider is not supported; use an exec plugin or a token"),
    ({"client-certificate-data": "not base64!", "client-key-data": "eA=="}, None,
     "{path}: users[u].user.client-certificate-data is not valid base64; encode the PEM with base64 -w0"),
    ({"exec": {"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}}, None,
     "{path}: users[u].user.exec.apiVersion 'client.authentication.k8s.io/v1alpha1' is not supported; use "
     "client.authentication.k8s.io/v1 or client.authentication.k8s.io/v1beta1"),
    ({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "kmm-dtk-no-such-plugin",
               "installHint": "Install it with\n  dnf install sso-plugin"}}, None,
     "{path}: users[u].user.exec.command 'kmm-dtk-no-such-plugin' was not found; Install it with dnf install "
     "sso-plugin"),
    ({"client-certificate": "missing.crt", "client-key": "missing.key"}, None,
     "{path}: users[u].user.client-certificate: cannot read {dir}/missing.crt (no such file or directory); "
     "fix the path"),
    ({"token": "t", "exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "x",
                             "interactiveMode": "Always"}}, None,
     "{path}: users[u].user.exec.interactiveMode Always needs a terminal, which kmm-dtk never gives; "
     "use IfAvailable or Never"),
    ({"token": "t"}, "other",
     "{path}: context 'other' not found (contexts: main); pass --context with one of them"),
])
def test_bad_kubeconfigs_are_one_line(tmp_path, user, context, expected):
    path = write_config(tmp_path / "config", {"server": "https://127.0.0.1:6443"}, user)
    with pytest.raises(KubeConfigError) as caught:
        load_settings(str(path), context, environ={})
    assert str(caught.value) == expected.format(path=path, dir=tmp_path)
    assert "\n" not in str(caught.value)


def test_unreachable_and_untrusted_servers_are_clean_messages(admin, tmp_path):
    port = free_port()
    refused = load_api_client(str(write_config(tmp_path / "dead", {"server": f"https://127.0.0.1:{port}"},
                                               {"token": "t"})))
    with pytest.raises(ApiError) as caught:
        KubeClient(refused).request("GET", "/version")
    assert (caught.value.status, caught.value.message) == (0, f"cannot connect to https://127.0.0.1:{port}: "
                                                              "connection refused")

    untrusted = load_api_client(str(write_config(tmp_path / "noca", {"server": admin["cluster"]["server"]},
                                                 {"token": "t"})))  # the system CAs, not the cluster's
    with pytest.raises(ApiError) as caught:
        KubeClient(untrusted).request("GET", "/version")
    assert caught.value.message.startswith(f"TLS with {admin['cluster']['server']} failed: certificate verify failed")
    assert "object at 0x" not in caught.value.message


@pytest.mark.parametrize("mode, scheme, expected", [
    ("hold", "https", "timed out after 0.5 s waiting for {url}"),
    ("hold", "http", "timed out after 0.5 s waiting for {url}"),
    ("drop", "https", ("TLS with {url} failed: ", "connection to {url} lost: ")),  # as the race goes
    ("drop", "http", "connection to {url} lost: "),
])
def test_silent_and_closing_servers_are_clean_messages(mode, scheme, expected):
    with CountingListener(mode) as listener:
        url = f"{scheme}://{listener.host}"
        connection = Connection(ConnectionSettings(server=url, source="test"))
        with pytest.raises(ApiError) as caught:
            KubeClient(connection, timeout=(1, 0.5)).request("GET", "/version")
    prefixes = tuple(e.format(url=url) for e in ((expected,) if isinstance(expected, str) else expected))
    assert caught.value.status == 0 and caught.value.message.startswith(prefixes)
    assert "object at 0x" not in caught.value.message and "\n" not in caught.value.message


# -- TLS server name, insecure, proxy -------------------------------------------------------------


def test_tls_server_name_is_the_name_verified(admin, tmp_path):
    cluster = admin["cluster"]
    good = write_config(tmp_path / "good", {**cluster, "tls-server-name": "kubernetes.default"}, admin["user"])
    assert whoami(load_api_client(str(good)))
    bad = write_config(tmp_path / "bad", {**cluster, "tls-server-name": "wrong.example"}, admin["user"])
    with pytest.raises(ApiError) as caught:
        whoami(load_api_client(str(bad)))
    assert caught.value.status == 0 and caught.value.message.startswith(f"TLS with {cluster['server']} failed")


def test_insecure_skip_tls_verify_needs_no_ca(admin, tmp_path):
    cluster = {"server": admin["cluster"]["server"], "insecure-skip-tls-verify": True}
    assert whoami(load_api_client(str(write_config(tmp_path / "c", cluster, admin["user"]))))


class _ConnectProxy(socketserver.ThreadingTCPServer):
    """An HTTP CONNECT proxy that records the targets it tunnels to."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Tunnel)
        self.targets: list[str] = []


class _Tunnel(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method != "CONNECT":
            self.request.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            return
        self.server.targets.append(target)  # type: ignore[attr-defined]
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((host, int(port)), timeout=10)
        self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for sock in (src, dst):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        back = threading.Thread(target=pipe, args=(upstream, self.request), daemon=True)
        back.start()
        pipe(self.request, upstream)
        back.join(10)
        upstream.close()


def test_proxy_url_tunnels_through_an_http_proxy(admin, tmp_path):
    proxy = _ConnectProxy()
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}"
        path = write_config(tmp_path / "c", {**admin["cluster"], "proxy-url": url}, admin["user"])
        assert whoami(load_api_client(str(path)))
        assert proxy.targets == [admin["cluster"]["server"].removeprefix("https://")]
    finally:
        proxy.shutdown()
        proxy.server_close()


# -- the client's Accept header --------------------------------------------------------------------

METADATA = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"


def test_accept_asks_for_partial_object_metadata(api, namespace):
    kube = KubeClient(api)
    name = f"cm-{uuid.uuid4().hex[:8]}"
    kube.create(CONFIGMAPS, {"metadata": {"name": name}, "data": {"big": "x" * 1000}}, namespace)
    listed = kube.request("GET", CONFIGMAPS.path(namespace), accept=METADATA)
    assert listed["kind"] == "PartialObjectMetadataList"
    item = next(i for i in listed["items"] if i["metadata"]["name"] == name)
    assert "data" not in item
    raw = json.loads(kube.request_raw("GET", CONFIGMAPS.path(namespace), accept=METADATA))
    assert raw["kind"] == "PartialObjectMetadataList"
    stream = kube.watch(CONFIGMAPS.path(namespace), {"resourceVersion": listed["metadata"]["resourceVersion"],
                                                    "timeoutSeconds": "5"},
                        accept="application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1")
    kube.patch(CONFIGMAPS, name, {"metadata": {"labels": {"seen": "yes"}}}, namespace)
    event = json.loads(next(stream.lines()))
    stream.close()
    assert event["object"]["kind"] == "PartialObjectMetadata" and "data" not in event["object"]


# -- the operator never imports the kubernetes package ----------------------------------------------


def test_the_operators_modules_do_not_import_the_kubernetes_package():
    code = ("import sys\n"
            "import kmm_dtk.cli, kmm_dtk.operator.app, kmm_dtk.kube.manager\n"
            "import kmm_dtk.kube.leaderelection, kmm_dtk.observability.http, kmm_dtk.release_cli\n"
            "print(sorted(m for m in sys.modules if m == 'kubernetes' or m.startswith('kubernetes.')))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
