"""The candidate S3 clients behind one small interface, for tests/test_servers.py and
benchmarks/s3_clients.py: put/get/list/delete of bytes, upload/download of a file or a folder.

Each adapter uses its library the way its documentation suggests for the job (pyarrow's
`copy_files`, s3fs's recursive `put`/`get`, obstore's async calls gathered, boto3's transfer
manager in a thread pool), so a benchmark compares what a user would write.
"""

from __future__ import annotations

import asyncio
import datetime
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from servers import S3

CONCURRENCY = 8  # files at a time for folders, where the library leaves it to the caller


def local_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


class Client:
    """One library's client for `bucket` on `server`, signing with `secret` (default: the right)."""

    name = ""

    def __init__(self, server: S3, bucket: str | None = None, secret: str | None = None) -> None:
        self.server = server
        self.bucket = bucket or server.bucket
        self.secret = server.secret if secret is None else secret

    def put(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def get(self, key: str) -> bytes:
        raise NotImplementedError

    def list(self, prefix: str) -> list[str]:
        """The keys under `prefix`, sorted."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def upload_file(self, local: Path, key: str) -> None:
        raise NotImplementedError

    def download_file(self, key: str, local: Path) -> None:
        raise NotImplementedError

    def upload_folder(self, local: Path, prefix: str) -> None:
        """Every file under `local` to `prefix/RELATIVE`; by default CONCURRENCY threads."""
        files = local_files(local)
        self._each(lambda p: self.folder_upload(p, f"{prefix}/{p.relative_to(local)}"), files)

    def download_folder(self, prefix: str, local: Path) -> None:
        keys = self.list(prefix + "/")

        def one(key: str) -> None:
            target = local / key[len(prefix) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            self.folder_download(key, target)

        self._each(one, keys)

    def folder_upload(self, local: Path, key: str) -> None:
        """One file of a folder (upload_folder's default way)."""
        self.upload_file(local, key)

    def folder_download(self, key: str, local: Path) -> None:
        self.download_file(key, local)

    @staticmethod
    def _each(job: Callable[[Any], None], items: list[Any]) -> None:
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            for _ in pool.map(job, items):
                pass


class PyArrow(Client):
    name = "pyarrow"

    def __init__(self, server: S3, bucket: str | None = None, secret: str | None = None) -> None:
        super().__init__(server, bucket, secret)
        from pyarrow import fs

        self.fs = fs.S3FileSystem(
            access_key=server.key_id,
            secret_key=self.secret,
            endpoint_override=server.endpoint,
            region=server.region,
            allow_bucket_creation=False,
            allow_bucket_deletion=False,
            retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=2),
        )
        self.local = fs.LocalFileSystem()

    def _path(self, key: str) -> str:
        return f"{self.bucket}/{key}"

    def put(self, key: str, data: bytes) -> None:
        with self.fs.open_output_stream(self._path(key)) as f:
            f.write(data)

    def get(self, key: str) -> bytes:
        with self.fs.open_input_stream(self._path(key)) as f:
            return bytes(f.read())

    def list(self, prefix: str) -> list[str]:
        from pyarrow import fs

        base, _, _ = prefix.rpartition("/")
        infos = self.fs.get_file_info(fs.FileSelector(self._path(base), recursive=True))
        keys = [i.path.split("/", 1)[1] for i in infos if i.type == fs.FileType.File]
        return sorted(k for k in keys if k.startswith(prefix))

    def delete(self, key: str) -> None:
        self.fs.delete_file(self._path(key))

    def _copy(self, source: str, target: str, upload: bool) -> None:
        from pyarrow import fs

        fs.copy_files(
            source,
            target,
            source_filesystem=self.local if upload else self.fs,
            destination_filesystem=self.fs if upload else self.local,
            use_threads=True,
        )

    def upload_file(self, local: Path, key: str) -> None:
        self._copy(str(local), self._path(key), upload=True)

    def download_file(self, key: str, local: Path) -> None:
        self._copy(self._path(key), str(local), upload=False)

    def upload_folder(self, local: Path, prefix: str) -> None:
        self._copy(str(local), self._path(prefix), upload=True)

    def download_folder(self, prefix: str, local: Path) -> None:
        self._copy(self._path(prefix), str(local), upload=False)


class Obstore(Client):
    name = "obstore"

    def __init__(self, server: S3, bucket: str | None = None, secret: str | None = None) -> None:
        super().__init__(server, bucket, secret)
        from obstore.store import S3Store

        self.store = S3Store(
            self.bucket,
            endpoint=server.endpoint,
            access_key_id=server.key_id,
            secret_access_key=self.secret,
            region=server.region,
            client_options={"allow_http": True},
            retry_config={"max_retries": 1, "retry_timeout": datetime.timedelta(seconds=10)},
        )

    def put(self, key: str, data: bytes) -> None:
        import obstore

        obstore.put(self.store, key, data)

    def get(self, key: str) -> bytes:
        import obstore

        return bytes(obstore.get(self.store, key).bytes())

    def list(self, prefix: str) -> list[str]:
        import obstore

        base, _, _ = prefix.rpartition("/")
        found = [m["path"] for m in obstore.list(self.store, base or None).collect()]
        return sorted(k for k in found if k.startswith(prefix))

    def delete(self, key: str) -> None:
        import obstore

        obstore.delete(self.store, key)

    def upload_file(self, local: Path, key: str) -> None:
        import obstore

        obstore.put(self.store, key, local)  # multipart, 12 parts at a time, for large files

    def download_file(self, key: str, local: Path) -> None:
        import obstore

        with local.open("wb") as f:
            for chunk in obstore.get(self.store, key).stream(min_chunk_size=8 << 20):
                f.write(chunk)

    def upload_folder(self, local: Path, prefix: str) -> None:
        import obstore

        async def run() -> None:
            limit = asyncio.Semaphore(CONCURRENCY * 2)

            async def one(p: Path) -> None:
                async with limit:
                    key = f"{prefix}/{p.relative_to(local)}"
                    await obstore.put_async(self.store, key, p.read_bytes())

            await asyncio.gather(*(one(p) for p in local_files(local)))

        asyncio.run(run())

    def download_folder(self, prefix: str, local: Path) -> None:
        import obstore

        async def run() -> None:
            limit = asyncio.Semaphore(CONCURRENCY * 2)

            async def one(key: str) -> None:
                async with limit:
                    data = await (await obstore.get_async(self.store, key)).bytes_async()
                target = local / key[len(prefix) + 1 :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(bytes(data))

            await asyncio.gather(*(one(k) for k in self.list(prefix + "/")))

        asyncio.run(run())


class S3fs(Client):
    name = "s3fs"

    def __init__(self, server: S3, bucket: str | None = None, secret: str | None = None) -> None:
        super().__init__(server, bucket, secret)
        import s3fs

        options = server.storage_options() | {"secret": self.secret}
        self.fs = s3fs.S3FileSystem(skip_instance_cache=True, **options)

    def _path(self, key: str) -> str:
        return f"{self.bucket}/{key}"

    def put(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(key), data)

    def get(self, key: str) -> bytes:
        return bytes(self.fs.cat_file(self._path(key)))

    def list(self, prefix: str) -> list[str]:
        base, _, _ = prefix.rpartition("/")
        self.fs.invalidate_cache()
        found = [p.split("/", 1)[1] for p in self.fs.find(self._path(base))]
        return sorted(k for k in found if k.startswith(prefix))

    def delete(self, key: str) -> None:
        self.fs.rm_file(self._path(key))

    def upload_file(self, local: Path, key: str) -> None:
        self.fs.put_file(str(local), self._path(key))

    def download_file(self, key: str, local: Path) -> None:
        self.fs.get_file(self._path(key), str(local))

    def upload_folder(self, local: Path, prefix: str) -> None:
        self.fs.put(str(local) + "/", self._path(prefix), recursive=True)

    def download_folder(self, prefix: str, local: Path) -> None:
        self.fs.get(self._path(prefix) + "/", str(local) + "/", recursive=True)


class Boto3(Client):
    name = "boto3"

    def __init__(self, server: S3, bucket: str | None = None, secret: str | None = None) -> None:
        super().__init__(server, bucket, secret)
        import boto3
        from botocore.config import Config

        self.client = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id=server.key_id,
            aws_secret_access_key=self.secret,
            region_name=server.region,
            config=Config(retries={"max_attempts": 2}, s3={"addressing_style": "path"}),
        )

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def get(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def list(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def upload_file(self, local: Path, key: str) -> None:
        self.client.upload_file(str(local), self.bucket, key)

    def download_file(self, key: str, local: Path) -> None:
        self.client.download_file(self.bucket, key, str(local))

    # many small objects: one request each (a transfer manager per file costs more than the file)
    def folder_upload(self, local: Path, key: str) -> None:
        self.put(key, local.read_bytes())

    def folder_download(self, key: str, local: Path) -> None:
        local.write_bytes(self.get(key))


CLIENTS: dict[str, type[Client]] = {c.name: c for c in (PyArrow, Obstore, S3fs, Boto3)}


def folder_size(folder: Path) -> int:
    return sum(os.path.getsize(p) for p in local_files(folder))
