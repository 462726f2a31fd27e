"""Stored objects in an S3-compatible bucket under a prefix, through obstore.

A bucket is shared with others: every key is checked to be a plain name below the prefix, so
nothing outside it is ever read, written or deleted. Settings come from where the AWS tools
keep them (the AWS_* environment, then ~/.aws/credentials and ~/.aws/config); the secret is
handed to obstore through a callback, so it is in no config, repr or message. A folder (zarr)
is one object per file under `key/`, uploaded and downloaded many at a time, and completely or
not at all: whatever a failed upload put is deleted again.

obstore is imported inside functions only: lamin_magic imports without it.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import datetime
import math
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from ..errors import (
    InstanceError,
    IntegrityError,
    InvalidArgumentError,
    MissingLibraryError,
    printable,
)
from .hashing import folder_files

if TYPE_CHECKING:
    from obstore.store import ClientConfig, S3Config, S3Credential, S3Store

T = TypeVar("T")

CONCURRENCY = 16  # files in flight at a time for a folder
CONNECT_TIMEOUT = "3s"  # a server that is down is an error within seconds
# a stalled transfer (or a server that accepts connections and never answers) is an error
# within seconds; it resets after every read, so a long download is not cut off
READ_TIMEOUT = "10s"
REQUEST_TIMEOUT = "6h"  # a whole request, body included: a large download is one GET
MAX_RETRIES = 2
RETRY_TIMEOUT = datetime.timedelta(seconds=5)
PART_SIZE = 8 << 20  # multipart chunk; grows for huge files: S3 allows 10,000 parts
MAX_PARTS = 9_000
STREAM_CHUNK = 8 << 20
DEFAULT_REGION = "us-east-1"
# names under the prefix that are not objects: the probe `check` writes and deletes again
PROBE_PREFIX = ".lamin-magic-probe-"
# the one object under the prefix that is not stored data: it names the instance (its storage
# id) whose objects the prefix holds, so no second instance is made on it and repair never
# removes what another instance stored
MARKER = ".lamin-team"
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# characters a key part may not hold: SeaweedFS turns "\" into "/", and controls do not print
BAD_CHARS = re.compile(r"[\\\x00-\x1f\x7f]")
# S3 error codes, from the XML body of a refusal
S3_CODE = re.compile(r"<Code>([^<]*)</Code>")
S3_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")
ENV_SOURCE = "from AWS_ACCESS_KEY_ID"


@dataclass(frozen=True)
class Entry:
    """A top-level name under the prefix: an object, or a folder of them (`folder`)."""

    key: str
    size: int  # bytes, summed over a folder's objects
    modified: float  # epoch seconds, the latest of a folder's objects
    folder: bool


@dataclass(frozen=True)
class Settings:
    """Where to connect and as whom, read from the AWS tools' places; never printed."""

    endpoint: str | None  # None: AWS itself
    region: str
    key_id: str | None
    secret: str | None = field(repr=False)
    token: str | None = field(repr=False)
    source: str  # where the credentials came from, for messages
    fix: str  # where to set them, for messages


def path_problem(path: str, what: str) -> str | None:
    """Why `path` cannot address something below the prefix, or None when it can."""
    if not isinstance(path, str) or not path:
        return f"{what} is empty"
    if path.startswith("/") or path.endswith("/"):
        return f"{what} {path!r} starts or ends with '/'"
    for part in path.split("/"):
        if not part:
            return f"{what} {path!r} has an empty part ('//')"
        if part in (".", ".."):
            return f"{what} {path!r} has a '{part}' part"
        if BAD_CHARS.search(part):
            return f"{what} {path!r} holds a backslash or a control character"
    return None


def check_key(key: object) -> str:
    """`key` if it is a plain name below the prefix (no part starting with '.'), else raise."""
    problem = path_problem(key, "the key") if isinstance(key, str) else "the key is not a string"
    if problem is None and any(part.startswith(".") for part in str(key).split("/")):
        problem = f"the key {key!r} has a part starting with '.'"
    if problem is not None:
        raise IntegrityError(
            f"refused to address an object in the bucket: {printable(problem)}; keys are "
            "plain names lamin_magic gives, so this one was edited by hand or came from elsewhere"
        )
    return str(key)


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of 's3://bucket' or 's3://bucket/some/prefix[/]'."""
    example = "write s3://BUCKET or s3://BUCKET/PREFIX"
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise InstanceError(f"{printable(str(url))!r} is not an S3 URL: {example}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    prefix = prefix.removesuffix("/")
    if not BUCKET.fullmatch(bucket) or ".." in bucket:
        raise InstanceError(
            f"{printable(url)!r} does not name a bucket (3-63 lowercase letters, digits, '.' "
            f"and '-'): {example}"
        )
    if prefix:
        problem = path_problem(prefix, "the prefix")
        if problem is not None:
            raise InstanceError(f"{printable(url)!r} cannot be used: {printable(problem)}")
    return bucket, prefix


# ---------------------------------------------------------------------------------------------
# settings


def _profile_sections(path: Path, profile: str, config_file: bool) -> dict[str, str] | None:
    """The key/value pairs of `profile` in an AWS credentials or config file, or None."""
    if not path.is_file():
        return None
    parser = configparser.RawConfigParser()  # raw: a secret may hold '%'
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError, OSError) as e:
        first = printable(str(e).splitlines()[0]) if str(e) else type(e).__name__
        raise InstanceError(f"cannot read {path}: {first}; fix or remove the file") from None
    section = f"profile {profile}" if config_file and profile != "default" else profile
    if config_file and not parser.has_section(section):
        section = f"profile {profile}"  # the AWS tools accept [profile default] too
    if not parser.has_section(section):
        return None
    return {k.lower(): v.strip() for k, v in parser.items(section)}


def read_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Endpoint, region and credentials, the environment first, then the profile's files."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    creds_path = Path(env.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials")
    config_path = Path(env.get("AWS_CONFIG_FILE") or home / ".aws" / "config")
    profile = env.get("AWS_PROFILE") or "default"
    creds = _profile_sections(creds_path, profile, config_file=False)
    config = _profile_sections(config_path, profile, config_file=True)
    if env.get("AWS_PROFILE") and creds is None and config is None:
        raise InstanceError(
            f"AWS_PROFILE={printable(profile)!r} names no profile in {creds_path} or "
            f"{config_path}: add it there or unset AWS_PROFILE"
        )
    creds, config = creds or {}, config or {}

    endpoint = (
        env.get("AWS_ENDPOINT_URL_S3")
        or env.get("AWS_ENDPOINT_URL")
        or config.get("endpoint_url")
        or None
    )
    if endpoint is not None:
        endpoint = endpoint.rstrip("/")
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", endpoint):
            raise InstanceError(
                f"the S3 endpoint {printable(endpoint)!r} is not an http:// or https:// URL: "
                "fix AWS_ENDPOINT_URL (or endpoint_url in the profile)"
            )
    region = (
        env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or config.get("region") or ""
    ).strip() or DEFAULT_REGION

    key_id, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key_id or secret:  # the environment's credentials go together, as in the AWS tools
        if not (key_id and secret):
            given, missing = (
                ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
                if key_id
                else ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
            )
            raise InstanceError(f"{given} is set but {missing} is not: set both, or neither")
        return Settings(
            endpoint,
            region,
            key_id,
            secret,
            env.get("AWS_SESSION_TOKEN") or None,
            ENV_SOURCE,
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        )
    for values, path in ((creds, creds_path), (config, config_path)):
        key_id, secret = values.get("aws_access_key_id"), values.get("aws_secret_access_key")
        if key_id or secret:
            where = f"profile {profile!r} of {path}"
            if not (key_id and secret):
                raise InstanceError(
                    f"{where} has only one of aws_access_key_id and aws_secret_access_key: set both"
                )
            token = values.get("aws_session_token") or None
            return Settings(endpoint, region, key_id, secret, token, f"from {where}", where)
    return Settings(
        endpoint,
        region,
        None,
        None,
        None,
        "none found",
        f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or profile {profile!r} in {creds_path}",
    )


# ---------------------------------------------------------------------------------------------
# running obstore's async calls


def run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to the end from synchronous code, also inside a running event loop
    (a Jupyter kernel has one, and asyncio.run refuses to nest): there in its own thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(make()))
        except BaseException as e:
            error.append(e)

    thread = threading.Thread(target=target, name="lamin-magic-s3")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _part_size(size: int) -> int:
    return max(PART_SIZE, math.ceil(size / MAX_PARTS))


# ---------------------------------------------------------------------------------------------
# the store


class ObjectStore:
    """Objects under s3://BUCKET/PREFIX, through obstore."""

    def __init__(self, url: str) -> None:
        self.bucket, self.prefix = parse_url(url)
        self.url = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self._settings: Settings | None = None
        self._client: S3Store | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    # -- connection -----------------------------------------------------------------------

    @property
    def store(self) -> S3Store:
        """obstore's client, made on first use from the settings of that moment."""
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> S3Store:
        try:
            from obstore.store import S3Store
        except ImportError as e:
            raise MissingLibraryError(
                f"{self.url} is reached through obstore, which is not installed here; install "
                "it: pip install 'lamin_magic[team]'"
            ) from e

        settings = read_settings()
        if settings.key_id is None:  # obstore would ask the EC2 metadata service, and wait
            raise InstanceError(
                f"no S3 credentials found for {self.url}: set {settings.fix} "
                "(aws configure writes that file)"
            )
        self._settings = settings
        key_id, secret, token = settings.key_id, settings.secret or "", settings.token

        def credentials() -> S3Credential:  # a closure: the secret stays out of the config
            return {
                "access_key_id": key_id,
                "secret_access_key": secret,
                "token": token,
                "expires_at": None,
            }

        options: ClientConfig = {
            "connect_timeout": CONNECT_TIMEOUT,
            "read_timeout": READ_TIMEOUT,
            "timeout": REQUEST_TIMEOUT,
        }
        config: S3Config = {"region": settings.region}
        if settings.endpoint is not None:
            options["allow_http"] = settings.endpoint.startswith("http://")
            config["endpoint"] = settings.endpoint
            config["virtual_hosted_style_request"] = False  # path-style: any host name works
        return S3Store(
            self.bucket,
            prefix=self.prefix or None,
            config=config,
            client_options=options,
            retry_config={"max_retries": MAX_RETRIES, "retry_timeout": RETRY_TIMEOUT},
            credential_provider=credentials,
        )

    def _where(self) -> str:
        endpoint = self._settings.endpoint if self._settings else None
        if endpoint and "@" in endpoint:  # never show a user and password given in the URL
            endpoint = re.sub(r"//[^/@]*@", "//", endpoint)
        return printable(endpoint) if endpoint else "AWS S3"

    def _fail(self, error: BaseException, doing: str) -> NoReturn:
        """Raise a one-line InstanceError for what went wrong while `doing`."""
        raise self._explain(error, doing) from error

    def _explain(self, error: BaseException, doing: str) -> InstanceError:
        """One line for an obstore failure: what happened to which URL, and the fix."""
        text = str(error)
        settings = self._settings
        for hidden in (settings.secret, settings.token) if settings else ():
            if hidden:
                text = text.replace(hidden, "***")
        code = _s3_code(error)
        status = re.search(r"non-2xx status code: (\d{3})", text)
        http = int(status.group(1)) if status else None
        key_id = settings.key_id if settings else None
        source = settings.source if settings else ""
        fix = settings.fix if settings else "the AWS settings"
        url, where = self.url, self._where()
        from_env = settings is not None and settings.source == ENV_SOURCE
        secret_fix = "AWS_SECRET_ACCESS_KEY" if from_env else fix
        key_fix = "AWS_ACCESS_KEY_ID" if from_env else fix
        if code == "NoSuchBucket":
            return InstanceError(
                f"the bucket {self.bucket!r} of {url} does not exist at {where}: create it "
                f"(aws s3 mb s3://{self.bucket}) or fix the URL"
            )
        if code == "SignatureDoesNotMatch":
            return InstanceError(
                f"{where} refused the secret access key of key id {key_id!r} ({source}) while "
                f"{doing} {url}: set the right secret in {secret_fix}"
            )
        if code in ("InvalidAccessKeyId", "InvalidClientTokenId"):
            return InstanceError(
                f"{where} does not know the access key id {key_id!r} ({source}) while {doing} "
                f"{url}: set a valid one in {key_fix}"
            )
        if code in ("ExpiredToken", "InvalidToken", "TokenRefreshRequired"):
            return InstanceError(
                f"the session token ({source}) was refused ({code}) while {doing} {url}: "
                f"renew it in {fix}"
            )
        if code in (
            "PermanentRedirect",
            "AuthorizationHeaderMalformed",
            "IllegalLocationConstraint",
        ):
            return InstanceError(
                f"{where} says the bucket of {url} is in another region than "
                f"{settings.region if settings else DEFAULT_REGION!r} ({code}): set AWS_REGION "
                "to the bucket's region"
            )
        if code == "AccessDenied" or (http == 403 and not code):
            return InstanceError(
                f"{where} denied key id {key_id!r} ({source}) {doing} {url}"
                + (
                    " (HTTP 403: a wrong secret or unknown key id also looks like this)"
                    if not code
                    else ""
                )
                + ": ask the bucket's owner to allow listing, reading, writing and deleting "
                f"under {url}/, or set other credentials in {fix}"
            )
        # obstore's first lines say what failed; the "Debug source" after them says why
        head = text.split("Debug source:")[0]
        if "error sending request" in head or "tcp connect error" in text:
            reason = (
                "connection refused"
                if "Connection refused" in text
                else "host name not found"
                if "dns error" in text
                else "timed out"
                if re.search(r"timed out|kind: Timeout|TimedOut", text)
                else "no connection"
            )
            return InstanceError(
                f"cannot reach the S3 server at {where} for {url} ({reason}): start it, or "
                "set AWS_ENDPOINT_URL to its address"
            )
        if "timed out" in head.lower():
            return InstanceError(
                f"the S3 server at {where} did not answer in time while {doing} {url}: check "
                "that it runs and the network, then try again"
            )
        if http == 404 and not code and doing == "listing":
            return InstanceError(
                f"{where} answered HTTP 404 to listing {url}: the bucket does not exist, or "
                "this is not an S3 server; fix the URL or AWS_ENDPOINT_URL"
            )
        said = S3_MESSAGE.search(text)
        if said:  # the server's words are shorter than obstore's first line
            detail = f"{code or f'HTTP {http}'} ({printable(said.group(1))[:200]})"
        else:
            first = head.strip().splitlines()
            detail = printable(first[0] if first else type(error).__name__)[:300]
        return InstanceError(
            f"S3 request failed while {doing} {url}: {detail}; ObjectStore.check() tells "
            "whether the settings are the cause"
        )

    def check(self) -> None:
        """Within a few seconds: the bucket answers, and we may list, write and delete in it."""
        store = self.store  # first: one line naming what to install when obstore is missing
        import obstore

        try:
            obstore.list_with_delimiter(store)
        except Exception as e:
            self._fail(e, "listing")
        probe = f"{PROBE_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
        try:
            obstore.put(store, probe, b"lamin_magic can write here\n")
        except Exception as e:
            self._fail(e, "writing to")
        try:
            obstore.delete(store, probe)
        except Exception as e:
            self._fail(e, "deleting in")

    def read_marker(self) -> str | None:
        """The text of the prefix's marker object, or None where there is none."""
        store = self.store
        import obstore

        try:
            return bytes(obstore.get(store, MARKER).bytes()).decode(errors="replace").strip()
        except FileNotFoundError as e:
            if _s3_code(e) not in ("", "NoSuchKey"):
                self._fail(e, "reading")
            return None
        except Exception as e:
            self._fail(e, "reading")

    def write_marker(self, text: str) -> None:
        store = self.store
        import obstore

        try:
            obstore.put(store, MARKER, text.encode() + b"\n")
        except Exception as e:
            self._fail(e, "writing to")

    def server_time(self) -> float:
        """Now, by the S3 server's clock (epoch seconds): the age of an object is measured
        against it, never against this machine's clock, which may be off."""
        store = self.store
        import obstore

        probe = f"{PROBE_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
        try:
            obstore.put(store, probe, b"")
            now = obstore.head(store, probe)["last_modified"].timestamp()
            obstore.delete(store, probe)
        except Exception as e:
            self._fail(e, "writing to")
        return float(now)

    # -- objects --------------------------------------------------------------------------

    def _missing(self, key: str) -> IntegrityError:
        return IntegrityError(f"the object {self.url}/{key} is missing from the bucket")

    def _head(self, key: str) -> Any:
        """obstore's metadata of the object `key`, or None when there is no such object."""
        store = self.store
        import obstore

        try:
            return obstore.head(store, key)
        except FileNotFoundError as e:
            if _s3_code(e) not in ("", "NoSuchKey"):  # NoSuchBucket comes as a not-found too
                self._fail(e, "reading")
            return None
        except Exception as e:
            self._fail(e, "reading")

    def _list(self, key: str | None) -> list[Any]:
        """obstore's metadata of every object under `key/` (or the whole prefix)."""
        store = self.store
        import obstore

        try:
            return list(obstore.list(store, key).collect())
        except Exception as e:
            self._fail(e, "listing")

    def stat(self, key: str) -> tuple[int, float] | None:
        """(size in bytes, latest modification as epoch seconds) of the object or folder of
        objects `key`; None when there is neither."""
        key = check_key(key)
        meta = self._head(key)
        if meta is not None:
            return int(meta["size"]), meta["last_modified"].timestamp()
        found = self._list(key)
        if not found:
            return None
        return sum(int(m["size"]) for m in found), max(
            m["last_modified"].timestamp() for m in found
        )

    def entries(self) -> list[Entry]:
        """Every top-level name under the prefix (a folder of objects once), sorted by name."""
        sizes: dict[str, list[float]] = {}
        folders: set[str] = set()
        for meta in self._list(None):
            name, slash, _ = meta["path"].partition("/")
            if name.startswith(PROBE_PREFIX) or name == MARKER:
                continue
            if slash:
                folders.add(name)
            total = sizes.setdefault(name, [0, 0.0])
            total[0] += int(meta["size"])
            total[1] = max(total[1], meta["last_modified"].timestamp())
        return [
            Entry(name, int(size), modified, name in folders)
            for name, (size, modified) in sorted(sizes.items())
        ]

    def delete(self, key: str) -> None:
        """Delete the object `key`, or every object of the folder `key`; absent is fine."""
        key = check_key(key)
        paths = [key, *(m["path"] for m in self._list(key))]
        import obstore

        try:
            obstore.delete(self.store, paths)
        except Exception as e:
            self._fail(e, "deleting in")

    def upload(self, local: Path, key: str) -> None:
        """Put a file as the object `key`, or every file of a folder as `key/<relative path>`,
        many at a time; completely or not at all (what was put is deleted on a failure).

        An object already under `key` is replaced: keys are fresh ids, never reused.
        """
        key = check_key(key)
        local = Path(local)
        if local.is_symlink() or not (local.is_file() or local.is_dir()):
            raise IntegrityError(
                f"{local} is not a file or a folder (a link, pipe or missing); lamin_magic "
                "uploads only what it wrote"
            )
        if local.is_dir():
            pairs = []
            for rel, path in folder_files(local):  # refuses links and pipes inside
                problem = path_problem(rel, "the file")
                if problem is not None:
                    raise IntegrityError(
                        f"cannot upload {local}: {printable(problem)}, which does not come "
                        "back the same from every S3 server; nothing was uploaded"
                    )
                pairs.append((path, f"{key}/{rel}"))
            if not pairs:
                raise InvalidArgumentError(
                    f"{local} is an empty folder, which a bucket cannot hold (it stores files "
                    "only); nothing was uploaded"
                )
        else:
            pairs = [(local, key)]
        self._put_all(pairs)

    def _put_all(self, pairs: list[tuple[Path, str]]) -> None:
        store = self.store  # first: one line naming what to install when obstore is missing
        import obstore

        attempted: list[str] = []
        failed: list[tuple[Path, BaseException]] = []

        async def put_all() -> None:
            limit = asyncio.Semaphore(CONCURRENCY)

            async def one(path: Path, key: str) -> None:
                async with limit:
                    if failed:  # one failed: start no more
                        return
                    attempted.append(key)
                    try:
                        size = path.stat().st_size
                        await obstore.put_async(store, key, path, chunk_size=_part_size(size))
                    except Exception as e:
                        failed.append((path, e))

            # every upload has ended when this returns: none lands after the clean-up
            await asyncio.gather(*(one(p, k) for p, k in pairs))

        try:
            run(put_all)
        except BaseException:
            self._remove_quietly(attempted)
            raise
        if not failed:
            return
        self._remove_quietly(attempted)
        path, error = failed[0]
        if _is_local(error):
            raise IntegrityError(
                f"cannot read {path} to upload it to {self.url} "
                f"({printable(str(error))}); nothing was uploaded"
            ) from error
        self._fail(error, "uploading to")

    def _remove_quietly(self, keys: list[str]) -> None:
        """Delete what a failed upload put, keeping the upload's error (not this one's)."""
        import obstore

        if keys:
            with contextlib.suppress(Exception):
                obstore.delete(self.store, keys)

    def download(self, key: str, local: Path) -> None:
        """Get the object `key` into the file `local`, or the folder of objects `key` into the
        folder `local`, many files at a time; `local` must not exist. Completely or not at all.
        """
        key = check_key(key)
        local = Path(local)
        if os.path.lexists(local):
            raise InvalidArgumentError(
                f"{local} exists; a download never writes into or over something: remove it"
            )
        meta = self._head(key)
        if meta is not None:
            jobs = [(key, local, int(meta["size"]))]
        else:
            found = self._list(key)
            if not found:
                raise self._missing(key)
            jobs = []
            for m in found:
                rel = m["path"][len(key) + 1 :]
                problem = path_problem(rel, "the object")
                if problem is not None:
                    raise IntegrityError(
                        f"cannot download the folder {self.url}/{key}: {printable(problem)}; "
                        "it was not written by lamin_magic"
                    )
                jobs.append((m["path"], local.joinpath(*rel.split("/")), int(m["size"])))
            local.mkdir(parents=True)
        try:
            self._get_all(jobs)
        except BaseException:
            if local.is_dir() and not local.is_symlink():
                shutil.rmtree(local, ignore_errors=True)
            else:
                local.unlink(missing_ok=True)
            raise

    def _get_all(self, jobs: list[tuple[str, Path, int]]) -> None:
        store = self.store  # first: one line naming what to install when obstore is missing
        import obstore

        failed: list[tuple[str, BaseException]] = []

        async def get_all() -> None:
            limit = asyncio.Semaphore(CONCURRENCY)

            async def one(key: str, target: Path, size: int) -> None:
                async with limit:
                    if failed:  # one failed: start no more
                        return
                    try:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        response = await obstore.get_async(store, key)
                        written = 0
                        with open(target, "xb") as f:
                            async for chunk in response.stream(min_chunk_size=STREAM_CHUNK):
                                f.write(chunk)
                                written += len(chunk)
                        if written != size:
                            raise IntegrityError(
                                f"the object {self.url}/{key} came with {written} bytes where "
                                f"{size} were listed; try again"
                            )
                    except Exception as e:
                        failed.append((key, e))

            await asyncio.gather(*(one(*job) for job in jobs))

        run(get_all)
        if not failed:
            return
        key, error = failed[0]
        missing = isinstance(error, FileNotFoundError) and _s3_code(error) in ("", "NoSuchKey")
        if missing and _is_obstore(error):
            raise IntegrityError(
                f"the object {self.url}/{key} is missing from the bucket (it was deleted "
                "while being downloaded)"
            ) from error
        if not _is_obstore(error):  # ours (a short body) or the local disk's (full, unwritable)
            raise error
        self._fail(error, "downloading from")


def _s3_code(error: BaseException) -> str:
    """The S3 error code (NoSuchBucket, AccessDenied, ...) in an obstore message, or ''."""
    found = S3_CODE.search(str(error))
    return found.group(1) if found else ""


def _is_obstore(error: BaseException) -> bool:
    """Whether obstore raised `error` about the bucket (it raises builtins for some)."""
    text = str(error)
    return (
        type(error).__module__.startswith("obstore")
        or "Object at location" in text
        or bool(S3_CODE.search(text))
    )


def _is_local(error: BaseException) -> bool:
    """Whether `error` is about a local file (unreadable, vanished), not the bucket."""
    return isinstance(error, OSError) and not _is_obstore(error)
