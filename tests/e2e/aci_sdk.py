"""Microsoft's ACI SDK (azure-mgmt-containerinstance) against skiff's /aci.

Run by tests/e2e/aci.rs, one scenario a process: `python aci_sdk.py SCENARIO`.
Environment: SKIFF_ACI_URL (http://host:port/aci), SKIFF_ACI_SUBSCRIPTION,
SKIFF_TOKEN (a tenant's token), SKIFF_IMAGE (the test image); for
`isolation` also SKIFF_OTHER_TOKEN and SKIFF_OTHER_SUBSCRIPTION; for
`refusals` SKIFF_AUTH_REGISTRY, _USER and _PASSWORD. A scenario fails with
an AssertionError naming what it saw (exit code 1); its last line on
stdout is a JSON object for the Rust side. Every wait is bounded.
"""

import json
import os
import sys
import time
import uuid

import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerinstance import ContainerInstanceManagementClient
from azure.mgmt.containerinstance.models import (
    AzureFileVolume,
    Container,
    ContainerExecRequest,
    ContainerExecRequestTerminalSize,
    ContainerGroup,
    ContainerPort,
    EnvironmentVariable,
    ImageRegistryCredential,
    IpAddress,
    Port,
    ResourceRequests,
    ResourceRequirements,
    Resource,
    Volume,
    VolumeMount,
)

API_VERSION = "2023-05-01"
# Plain HTTP to the local API: the SDK's bearer policy refuses it otherwise
# (the option reaches its pollers too).
HTTP = {"enforce_https": False}
WAIT_S = 120


class SkiffToken:
    """A TokenCredential that hands out a skiff tenant token."""

    def __init__(self, token):
        self.token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self.token, int(time.time()) + 3600)


def env(name):
    value = os.environ.get(name)
    assert value, f"{name} is not set: run this through tests/e2e/aci.rs"
    return value


URL = env("SKIFF_ACI_URL")
SUB = env("SKIFF_ACI_SUBSCRIPTION")
TOKEN = env("SKIFF_TOKEN")
IMAGE = env("SKIFF_IMAGE")


def client(token=TOKEN, sub=SUB):
    return ContainerInstanceManagementClient(SkiffToken(token), sub, base_url=URL)


def rg():
    return f"rg-{uuid.uuid4().hex[:8]}"


def container(name, script, cpu=0.25, memory=0.25, **kw):
    return Container(
        name=name,
        image=IMAGE,
        command=["sh", "-c", script],
        resources=ResourceRequirements(requests=ResourceRequests(cpu=cpu, memory_in_gb=memory)),
        **kw,
    )


def group(*containers, **kw):
    kw.setdefault("restart_policy", "Never")
    kw.setdefault("os_type", "Linux")
    return ContainerGroup(location="skiff-local", containers=list(containers), **kw)


def create(c, resource_group, name, g):
    poller = c.container_groups.begin_create_or_update(resource_group, name, g, polling_interval=1, **HTTP)
    result = poller.result(timeout=WAIT_S)
    assert poller.done(), f"the create of {name} did not finish within {WAIT_S} s"
    return result


def wait_state(c, resource_group, name, want, within=WAIT_S):
    deadline = time.monotonic() + within
    while True:
        g = c.container_groups.get(resource_group, name, **HTTP)
        if g.instance_view.state == want:
            return g
        assert time.monotonic() < deadline, (
            f"{name}: still {g.instance_view.state} after {within} s, wanted {want}: {g.as_dict()}"
        )
        time.sleep(0.5)


def wait_logs(c, resource_group, name, member, needle, within=WAIT_S):
    deadline = time.monotonic() + within
    while True:
        logs = c.containers.list_logs(resource_group, name, member, **HTTP).content
        if needle in logs:
            return logs
        assert time.monotonic() < deadline, f"{name}/{member}: no {needle!r} in its logs: {logs!r}"
        time.sleep(0.5)


def raw(method, path, token=TOKEN, api_version=API_VERSION, body=None, query=""):
    q = f"?api-version={api_version}" if api_version else "?"
    return requests.request(
        method,
        f"{URL}{path}{q}{query}",
        headers={"Authorization": f"Bearer {token}"},
        json=body,
        timeout=30,
    )


def arm_error(response):
    body = response.json()
    assert set(body) == {"error"} and "code" in body["error"] and "message" in body["error"], body
    return body["error"]


def expect_error(call, status, code):
    try:
        call()
    except HttpResponseError as e:
        assert e.status_code == status, f"wanted {status} {code}, got {e.status_code}: {e.message}"
        got = e.error.code if e.error else None
        assert got == code, f"wanted {code}, got {got}: {e.message}"
        return e
    raise AssertionError(f"wanted {status} {code}, the call succeeded")


def group_path(resource_group, name, sub=SUB):
    return (
        f"/subscriptions/{sub}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.ContainerInstance/containerGroups/{name}"
    )


def lifecycle():
    c, r = client(), rg()
    # The token's one subscription, as up.sh reads it for SKIFF_ACI_SUBSCRIPTION.
    subs = raw("GET", "/subscriptions", api_version="2020-01-01").json()
    assert [x["subscriptionId"] for x in subs["value"]] == [SUB], subs
    life = lambda: group(container("app", "echo hello-aci; exec sleep 3600"), restart_policy="Always")
    g = create(c, r, "life", life())
    assert g.provisioning_state == "Succeeded", g.as_dict()
    assert g.id == group_path(r, "life"), g.id
    assert g.location == "skiff-local" and g.os_type == "Linux", g.as_dict()
    g = wait_state(c, r, "life", "Running")
    assert g.containers[0].instance_view.current_state.state == "Running", g.as_dict()
    assert g.containers[0].instance_view.current_state.start_time is not None, g.as_dict()
    wait_logs(c, r, "life", "app", "hello-aci")
    # The same PUT again (a client's retry) changes nothing: the same run.
    started = g.containers[0].instance_view.current_state.start_time
    again = create(c, r, "life", life())
    assert again.containers[0].instance_view.current_state.start_time == started, again.as_dict()
    assert again.containers[0].instance_view.restart_count == 0, again.as_dict()
    tail = c.containers.list_logs(r, "life", "app", tail=1, **HTTP).content
    assert tail == "hello-aci\n", repr(tail)
    # A second group for the lists and their pages.
    create(c, r, "second", group(container("app", "exec sleep 3600")))
    names = sorted(x.name for x in c.container_groups.list_by_resource_group(r, **HTTP))
    assert names == ["life", "second"], names
    everywhere = [x.name for x in c.container_groups.list(**HTTP)]
    assert "life" in everywhere and "second" in everywhere, everywhere
    page = raw("GET", f"/subscriptions/{SUB}/resourceGroups/{r}/providers/Microsoft.ContainerInstance/containerGroups",
               query="&$top=1").json()
    assert len(page["value"]) == 1 and page["nextLink"].startswith("http"), page
    rest = requests.get(page["nextLink"], headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()
    assert [x["name"] for x in rest["value"]] != [page["value"][0]["name"]] and len(rest["value"]) == 1, rest
    assert "nextLink" not in rest, rest
    # Case-insensitive literal segments, as ARM has them.
    upper = raw("GET", group_path(r, "life").replace("resourceGroups", "RESOURCEGROUPS").replace("providers", "Providers"))
    assert upper.status_code == 200 and upper.json()["name"] == "life", upper.text
    # Stop, start (a long-running operation), restart.
    c.container_groups.stop(r, "life", **HTTP)
    wait_state(c, r, "life", "Stopped")
    c.container_groups.begin_start(r, "life", polling_interval=1, **HTTP).result(timeout=WAIT_S)
    g = wait_state(c, r, "life", "Running")
    c.container_groups.begin_restart(r, "life", polling_interval=1, **HTTP).result(timeout=WAIT_S)
    g = wait_state(c, r, "life", "Running")
    # Tags: PATCH.
    patched = c.container_groups.update(r, "life", Resource(tags={"team": "web"}), **HTTP)
    assert patched.tags == {"team": "web"}, patched.tags
    # ... and the members carry them: skiff's own API finds them by label.
    native = URL.rsplit("/aci", 1)[0]
    found = requests.get(f"{native}/v1/containers", params={"label": "team=web"},
                         headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()
    assert [x["name"] for x in found["items"]] == ["app"], found
    # Delete: 200 with the group, then it is gone; a second delete is 204.
    c.container_groups.begin_delete(r, "life", polling_interval=1, **HTTP).result(timeout=WAIT_S)
    expect_error(lambda: c.container_groups.get(r, "life", **HTTP), 404, "ResourceNotFound")
    again = raw("DELETE", group_path(r, "life"))
    assert again.status_code == 204, again.text
    c.container_groups.begin_delete(r, "second", polling_interval=1, **HTTP).result(timeout=WAIT_S)
    return {"resource_group": r}


def refusals():
    c, r = client(), rg()
    # Positive control: the same call, valid, is accepted.
    ok = create(c, r, "control", group(container("app", "exec sleep 3600")))
    assert ok.provisioning_state == "Succeeded", ok.as_dict()
    path = group_path(r, "control")
    # api-version: required, and one of those this server speaks.
    e = arm_error(raw("GET", path, api_version=None))
    assert e["code"] == "MissingApiVersionParameter", e
    resp = raw("GET", path, api_version="2015-01-01")
    assert resp.status_code == 400 and arm_error(resp)["code"] == "InvalidApiVersionParameter", resp.text
    for version in ["2021-10-01", "2023-05-01", "2024-05-01-preview"]:
        assert raw("GET", path, api_version=version).status_code == 200, version
    # Another subscription id.
    other = client(sub=str(uuid.uuid4()))
    expect_error(lambda: other.container_groups.get(r, "control", **HTTP), 404, "SubscriptionNotFound")
    # A group that does not exist.
    expect_error(lambda: c.container_groups.get(r, "nothing", **HTTP), 404, "ResourceNotFound")
    # No token, a wrong one.
    assert raw("GET", path, token="nope").status_code == 401
    # Bodies, each breaking one rule.
    rules = [
        ("windows", group(container("app", "true"), os_type="Windows"), "UnsupportedOsType"),
        ("too-big", group(container("app", "true", cpu=64)), "InvalidRequestContent"),
        ("missing", group(Container(name="app", image=f"{IMAGE.rsplit(':', 1)[0]}:no-such-tag",
                                    resources=ResourceRequirements(requests=ResourceRequests(cpu=0.25, memory_in_gb=0.25)))),
         "InaccessibleImage"),
        ("azurefile", group(container("app", "true", volume_mounts=[VolumeMount(name="v", mount_path="/v")]),
                            volumes=[Volume(name="v", azure_file=AzureFileVolume(share_name="s", storage_account_name="a"))]),
         "InvalidRequestContent"),
        ("both-values", group(container("app", "true", environment_variables=[
            EnvironmentVariable(name="A", value="1", secure_value="2")])), "InvalidRequestContent"),
        ("bad-port", group(container("app", "true"), ip_address=IpAddress(type="Public", ports=[Port(port=9999)])),
         "InvalidRequestContent"),
        ("Upper", group(container("app", "true")), "InvalidRequestContent"),
    ]
    seen = {}
    for name, body, code in rules:
        err = expect_error(lambda: c.container_groups.begin_create_or_update(r, name, body, **HTTP), 400, code)
        seen[name] = code
        assert err.error.message, name
    # No location: ARM's LocationRequired.
    resp = raw("PUT", group_path(r, "noloc"), body={"properties": {"osType": "Linux", "containers": []}})
    assert resp.status_code == 400 and arm_error(resp)["code"] == "LocationRequired", resp.text
    # Private registry: wrong credentials refused at once, right ones accepted.
    registry = env("SKIFF_AUTH_REGISTRY")
    image = f"{registry}/skiff/busybox:latest"
    def with_creds(password):
        return group(Container(name="app", image=image, command=["sleep", "3600"],
                               resources=ResourceRequirements(requests=ResourceRequests(cpu=0.25, memory_in_gb=0.25))),
                     image_registry_credentials=[ImageRegistryCredential(
                         server=registry, username=env("SKIFF_AUTH_REGISTRY_USER"), password=password)])
    expect_error(lambda: c.container_groups.begin_create_or_update(r, "badcreds", with_creds("wrong"), **HTTP),
                 400, "InaccessibleImage")
    good = create(c, r, "goodcreds", with_creds(env("SKIFF_AUTH_REGISTRY_PASSWORD")))
    assert good.provisioning_state == "Succeeded", good.as_dict()
    assert good.image_registry_credentials is None or all(x.password is None for x in good.image_registry_credentials)
    for name in ["control", "goodcreds"]:
        c.container_groups.begin_delete(r, name, **HTTP).result(timeout=WAIT_S)
    return {"refused": seen}


def isolation():
    c, r = client(), rg()
    create(c, r, "mine", group(container("app", "exec sleep 3600")))
    other_token, other_sub = env("SKIFF_OTHER_TOKEN"), env("SKIFF_OTHER_SUBSCRIPTION")
    theirs = client(token=other_token, sub=other_sub)
    expect_error(lambda: theirs.container_groups.get(r, "mine", **HTTP), 404, "ResourceNotFound")
    assert raw("DELETE", group_path(r, "mine", sub=other_sub), token=other_token).status_code == 204
    assert [x.name for x in theirs.container_groups.list(**HTTP)] == []
    # Their token with this subscription id.
    spoofed = client(token=other_token, sub=SUB)
    expect_error(lambda: spoofed.container_groups.get(r, "mine", **HTTP), 404, "SubscriptionNotFound")
    # Still there for its owner.
    assert c.container_groups.get(r, "mine", **HTTP).name == "mine"
    c.container_groups.begin_delete(r, "mine", **HTTP).result(timeout=WAIT_S)
    return {}


def localhost():
    c, r = client(), rg()
    server = container("server", "mkdir -p /tmp/www && echo pong-from-server > /tmp/www/index.html"
                                 " && exec httpd -f -p 8080 -h /tmp/www", ports=[ContainerPort(port=8080)])
    client_ = container("client", "until wget -qO- http://127.0.0.1:8080/; do sleep 1; done; exec sleep 3600")
    create(c, r, "pair", group(server, client_, ip_address=IpAddress(type="Public", ports=[Port(port=8080)])))
    g = wait_state(c, r, "pair", "Running")
    assert g.ip_address.ports[0].port == 8080, g.as_dict()
    wait_logs(c, r, "pair", "client", "pong-from-server")
    c.container_groups.begin_delete(r, "pair", **HTTP).result(timeout=WAIT_S)
    return {}


def secure():
    c, r = client(), rg()
    suffix = uuid.uuid4().hex
    secret = f"s3cret-{suffix}"
    # The container checks the secure value against a plain one that is
    # not the secret itself, so that the secret's text can be looked for.
    body = group(
        container("app", '[ "$HUSH" = "s3cret-$SUFFIX" ] && echo secure-ok; cat /keys/key; echo; exec sleep 3600',
                  environment_variables=[EnvironmentVariable(name="HUSH", secure_value=secret),
                                         EnvironmentVariable(name="SUFFIX", value=suffix)],
                  volume_mounts=[VolumeMount(name="keys", mount_path="/keys")]),
        volumes=[Volume(name="keys", secret={"key": "ZmlsZS1zZWNyZXQ="})],
    )
    create(c, r, "sec", body)
    wait_logs(c, r, "sec", "app", "file-secret")
    wait_logs(c, r, "sec", "app", "secure-ok")
    g = c.container_groups.get(r, "sec", **HTTP)
    env_vars = {e.name: e for e in g.containers[0].environment_variables}
    assert env_vars["HUSH"].secure_value is None and env_vars["HUSH"].value is None, g.as_dict()
    for path in [group_path(r, "sec"),
                 f"/subscriptions/{SUB}/resourceGroups/{r}/providers/Microsoft.ContainerInstance/containerGroups"]:
        text = raw("GET", path).text
        assert secret not in text, text
        body = json.loads(text)
        groups = body.get("value", [body])
        for x in groups:
            for e in x["properties"]["containers"][0]["properties"]["environmentVariables"]:
                if e["name"] == "HUSH":
                    assert "value" not in e and "secureValue" not in e, e
        assert "ZmlsZS1zZWNyZXQ=" not in text and "file-secret" not in text, text
    c.container_groups.begin_delete(r, "sec", **HTTP).result(timeout=WAIT_S)
    return {}


def exec_():
    """Makes a running group and hands exec and attach sessions to Rust."""
    c, r = client(), rg()
    create(c, r, "shell", group(container("app", "echo attached-output; exec sleep 3600")))
    wait_state(c, r, "shell", "Running")
    wait_logs(c, r, "shell", "app", "attached-output")
    ex = c.containers.execute_command(r, "shell", "app", ContainerExecRequest(
        command="/bin/sh", terminal_size=ContainerExecRequestTerminalSize(rows=24, cols=80)), **HTTP)
    at = c.containers.attach(r, "shell", "app", **HTTP)
    assert ex.web_socket_uri.startswith("ws://") and ex.password, ex.as_dict()
    return {"resource_group": r, "exec": ex.as_dict(), "attach": at.as_dict()}


def cleanup():
    c = client()
    for g in c.container_groups.list(**HTTP):
        rgroup = g.id.split("/")[4]
        c.container_groups.begin_delete(rgroup, g.name, **HTTP).result(timeout=WAIT_S)
    return {}


SCENARIOS = {
    "lifecycle": lifecycle,
    "refusals": refusals,
    "isolation": isolation,
    "localhost": localhost,
    "secure": secure,
    "exec": exec_,
    "cleanup": cleanup,
}

if __name__ == "__main__":
    scenario = SCENARIOS[sys.argv[1]]
    print(json.dumps(scenario()))
