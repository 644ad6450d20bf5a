"""schemathesis hooks of tests/e2e/fuzz.rs (loaded with SCHEMATHESIS_HOOKS).

A JSON Schema speaks of one value at a time and knows neither the server's
configuration nor the clock, so skiff's OpenAPI document cannot state these
rules of its API; each is in the operation's text instead:

- an `Idempotency-Key` names one request: the same key with another request
  is 422 `idempotency-key-reused`, by design;
- a usage window: `to` after `from`, at most 366 days, whole seconds;
- a rate card: effective from a whole UTC hour that has not passed;
- `env` and `secure_env` (and a job task's `env`): no key in both;
- `ports`: no (port, protocol) twice, no (host_port, protocol) twice, and
  ports or a `network_group` only with `network: private` (the default);
- `image_registry_credentials`: no server twice (compared in lower case),
  and none in a job's template (stored credentials serve its tasks);
- a job: `tasks`, when given, has `count` entries; its task names
  (`<name>-<index>-a<attempt>`) are container names (at most 63 characters);
- `volumes`: names unique, exactly one of `empty_dir` and `secret`, a
  memory volume no larger than `memory_mib`, secret file paths relative and
  normalised with base64 contents; `mounts` name a declared volume, each at
  a normalised path once;
- a probe has exactly one action, its command without NUL;
- a container group: its containers named once each, none publishing a
  `host_port` of its own (the group's `ports` publish); the group's
  `volumes` go with every container's `mounts` and `memory_mib`; its
  labels never `skiff.group` or `skiff.group-member` (the server's own);
  its `annotations` at most 4 KiB in all;
- a `notify_url` names a host the server allows (the fuzz pool allows
  127.0.0.1 and localhost);
- limits in bytes (UTF-8), where JSON Schema's `maxLength` counts
  characters: a label value at most 256, a tenant's name 128 (blanks around
  it aside), a join token's description 256, an adjustment's id 128; an
  environment (`env` and `secure_env`) and a command at most 64 KiB each.

The hook below makes the *valid* requests schemathesis generates follow them
(a fresh key, a window of up to 366 days from `from`, ...), so that a valid
request is one the server must accept. Invalid requests are left as they were
made: the server must still refuse each one.
"""

import base64
import datetime
import random
import uuid

import schemathesis

MAX_WINDOW = datetime.timedelta(days=366)
# What a job puts in every task's environment itself.
JOB_ENV = {"SKIFF_JOB_ID", "SKIFF_TASK_INDEX", "SKIFF_TASK_COUNT", "SKIFF_TASK_ATTEMPT"}
# Seeded, as schemathesis is (the order of two workers' requests varies).
RNG = random.Random(20261127)
LATEST = datetime.datetime(9999, 1, 1, tzinfo=datetime.timezone.utc)


def _instant(text):
    """An RFC 3339 timestamp as an aware datetime, or None."""
    try:
        t = datetime.datetime.fromisoformat(str(text).replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else None


def _rfc3339(t):
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _usage_window(query):
    start = _instant(query.get("from"))
    if start is None:
        return
    start = min(start.replace(microsecond=0), LATEST)
    seconds = RNG.randint(1, int(MAX_WINDOW.total_seconds()))
    query["from"] = _rfc3339(start)
    query["to"] = _rfc3339(start + datetime.timedelta(seconds=seconds))


def _rate_card(body):
    now = datetime.datetime.now(datetime.timezone.utc).replace(minute=0, second=0, microsecond=0)
    hours = RNG.randint(1, 24 * 365 * 50)
    body["effective_from"] = _rfc3339(now + datetime.timedelta(hours=hours))


def _no_key_in_both(container, extra_env=()):
    secure = container.get("secure_env")
    if isinstance(secure, dict):
        env = container.get("env") or {}
        for key in list(secure):
            if key in env or key in extra_env:
                del secure[key]


def _utf8(value):
    return str(value).encode("utf-8", "surrogatepass")


def _bytes(text, limit):
    """`text` cut to at most `limit` bytes of UTF-8 (whole characters)."""
    return _utf8(text)[:limit].decode("utf-8", "ignore")


def _labels(labels):
    if isinstance(labels, dict):
        for key, value in labels.items():
            if isinstance(value, str):
                labels[key] = _bytes(value, 256)


def _size(container, limit=64 * 1024):
    """Drops environment entries and command arguments past the size limits."""
    total = 0
    for field in ("env", "secure_env"):
        env = container.get(field)
        if isinstance(env, dict):
            for key in list(env):
                size = len(_utf8(key)) + len(_utf8(env[key])) + 2
                if total + size > limit:
                    del env[key]
                else:
                    total += size
    command = container.get("command")
    if isinstance(command, list):
        total = 0
        for i, arg in enumerate(command):
            total += len(_utf8(arg))
            if total > limit:
                del command[i:]
                break


def _ports(container):
    """Publishes each (port, protocol) and (host_port, protocol) once, and
    nothing without a private network."""
    if container.get("network") == "none":
        container.pop("ports", None)
        container.pop("network_group", None)
        return
    ports = container.get("ports")
    if not isinstance(ports, list):
        return
    seen, kept = set(), []
    for p in ports:
        if not isinstance(p, dict):
            kept.append(p)
            continue
        protocol = p.get("protocol") or "tcp"
        keys = {("port", p.get("port"), protocol)}
        if p.get("host_port") is not None:
            keys.add(("host", p.get("host_port"), protocol))
        if keys & seen:
            continue
        seen |= keys
        kept.append(p)
    container["ports"] = kept


def _volumes(container):
    """Volumes and mounts that go together (see the module's text)."""
    volumes = container.get("volumes")
    names = []
    if isinstance(volumes, list):
        memory = container.get("memory_mib")
        kept = []
        for i, v in enumerate(volumes):
            if not isinstance(v, dict):
                continue
            v["name"] = f"v{i}"
            if v.get("empty_dir") is not None and v.get("secret") is not None:
                v["secret"] = None
            if v.get("empty_dir") is None and v.get("secret") is None:
                v["empty_dir"] = {}
            empty_dir = v.get("empty_dir")
            if isinstance(empty_dir, dict) and empty_dir.get("medium") == "memory":
                size = empty_dir.get("size_mib")
                # (JSON numbers: 100 and 100.0 alike)
                if isinstance(memory, (int, float)) and isinstance(size, (int, float)):
                    empty_dir["size_mib"] = max(1, min(int(size), int(memory)))
            secret = v.get("secret")
            if isinstance(secret, dict) and isinstance(secret.get("files"), dict):
                files = list(secret["files"].values())[:8]
                secret["files"] = {
                    f"f{j}": base64.b64encode(_utf8(content)[:1024]).decode()
                    for j, content in enumerate(files)
                }
            kept.append(v)
            names.append(v["name"])
        container["volumes"] = kept
    mounts = container.get("mounts")
    if isinstance(mounts, list):
        kept = []
        for i, m in enumerate(mounts):
            if isinstance(m, dict) and names:
                m["volume"] = names[i % len(names)]
                m["path"] = f"/m{i}"
                kept.append(m)
        container["mounts"] = kept


def _probes(container):
    for field in ("liveness_probe", "readiness_probe"):
        probe = container.get(field)
        if not isinstance(probe, dict):
            continue
        actions = [a for a in ("exec", "http_get", "tcp_socket") if probe.get(a) is not None]
        for extra in actions[1:]:
            probe[extra] = None
        if not actions:
            probe["tcp_socket"] = {"port": 80}
        exec_ = probe.get("exec")
        if isinstance(exec_, dict) and isinstance(exec_.get("command"), list):
            exec_["command"] = [str(a).replace("\0", "")[:1024] for a in exec_["command"]] or ["true"]


def _registry_credentials(body):
    """Names each registry server once (servers compare in lower case)."""
    credentials = body.get("image_registry_credentials")
    if not isinstance(credentials, list):
        return
    seen, kept = set(), []
    for c in credentials:
        server = c.get("server") if isinstance(c, dict) else None
        if isinstance(server, str):
            if server.lower() in seen:
                continue
            seen.add(server.lower())
        kept.append(c)
    body["image_registry_credentials"] = kept


def _container(body, extra_env=()):
    _no_key_in_both(body, extra_env)
    _registry_credentials(body)
    _ports(body)
    _volumes(body)
    _probes(body)
    _labels(body.get("labels"))
    placement = body.get("placement")
    if isinstance(placement, dict):
        _labels(placement.get("host_labels"))
    _size(body)


def _notify_url(body):
    url = body.get("notify_url")
    if isinstance(url, str) and url:
        body["notify_url"] = "http://127.0.0.1:9/" + uuid.uuid4().hex


def _job(body):
    template = body.get("template")
    tasks = body.get("tasks")
    if isinstance(tasks, list):
        if tasks:
            body["count"] = len(tasks)
        else:
            body["tasks"] = None
    if isinstance(template, dict):
        template.pop("image_registry_credentials", None)
        task_env = set(JOB_ENV)
        for task in tasks or []:
            if isinstance(task, dict) and isinstance(task.get("env"), dict):
                task_env.update(task["env"])
        _container(template, task_env)
        _labels(body.get("labels"))
    name = body.get("name")
    if isinstance(name, str) and isinstance(body.get("count"), int):
        attempts = (body.get("max_retries") or 0) + 1
        suffix = f"-{body['count'] - 1}" + (f"-a{attempts}" if attempts > 1 else "")
        body["name"] = name[: 63 - len(suffix)] or "j"
    _notify_url(body)


def _group(body):
    members = body.get("containers")
    if isinstance(members, list):
        seen, kept = set(), []
        for m in members:
            name = m.get("name") if isinstance(m, dict) else None
            if isinstance(name, str):
                if name in seen:
                    continue
                seen.add(name)
            kept.append(m)
        body["containers"] = kept
    members = [m for m in body.get("containers") or [] if isinstance(m, dict)]
    _registry_credentials(body)
    _ports(body)
    # The group's volumes against its smallest member; then each member's
    # mounts against them.
    memories = [m["memory_mib"] for m in members if isinstance(m.get("memory_mib"), (int, float))]
    shared = {"volumes": body.get("volumes"), "memory_mib": min(memories) if memories else None}
    _volumes(shared)
    if "volumes" in body:
        body["volumes"] = shared["volumes"]
    for m in members:
        own = {"volumes": body.get("volumes"), "mounts": m.get("mounts"), "memory_mib": m.get("memory_mib")}
        _volumes(own)
        if "mounts" in m:
            m["mounts"] = own["mounts"]
        if not isinstance(body.get("volumes"), list):
            m.pop("mounts", None)
        ports = m.get("ports")
        if isinstance(ports, list):
            for p in ports:
                if isinstance(p, dict):
                    p.pop("host_port", None)
            _ports(m)
        _no_key_in_both(m)
        _probes(m)
        _size(m)
    labels = body.get("labels")
    if isinstance(labels, dict):
        labels.pop("skiff.group", None)
        labels.pop("skiff.group-member", None)
        _labels(labels)
    placement = body.get("placement")
    if isinstance(placement, dict):
        _labels(placement.get("host_labels"))
    annotations = body.get("annotations")
    if isinstance(annotations, dict):
        total = 0
        for key in list(annotations):
            value = annotations[key]
            size = len(_utf8(key)) + (len(_utf8(value)) if isinstance(value, str) else 0)
            if total + size > 4096:
                del annotations[key]
            else:
                total += size


@schemathesis.hook
def before_call(ctx, case, kwargs):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    headers = case.headers or {}
    for name in list(headers):
        if name.lower() == "idempotency-key" and isinstance(headers[name], str):
            headers[name] = uuid.uuid4().hex
    path = case.operation.path
    method = case.operation.method.upper()
    body = case.body if isinstance(case.body, dict) else None
    if path in ("/v1/usage", "/v1/admin/usage") and isinstance(case.query, dict):
        _usage_window(case.query)
    elif (method, path) == ("POST", "/v1/admin/rates") and body is not None:
        _rate_card(body)
    elif (method, path) == ("POST", "/v1/containers") and body is not None:
        _container(body)
        _notify_url(body)
    elif (method, path) == ("POST", "/v1/jobs") and body is not None:
        _job(body)
    elif (method, path) == ("POST", "/v1/groups") and body is not None:
        _group(body)
    elif (method, path) == ("POST", "/v1/images/prewarm") and body is not None:
        _registry_credentials(body)
    elif (method, path) == ("POST", "/v1/containers/{id}/exec") and body is not None:
        _size(body)
    elif (method, path) == ("POST", "/v1/tenants") and body is not None:
        if isinstance(body.get("name"), str):
            name = body["name"].strip()
            body["name"] = _bytes(name, 128).strip() or "t"
    elif (method, path) == ("POST", "/v1/admin/join-tokens") and body is not None:
        if isinstance(body.get("description"), str):
            body["description"] = _bytes(body["description"], 256)
    elif (method, path) == ("POST", "/v1/admin/adjustments") and body is not None:
        if isinstance(body.get("adjustment_id"), str):
            body["adjustment_id"] = _bytes(body["adjustment_id"], 128) or "a"
