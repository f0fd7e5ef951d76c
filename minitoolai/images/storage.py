"""Where generated images go, and the URL a client downloads them from.

local (default): files under <data_dir>/images, served by this server at
`/api/texttoimage/files/<key>`, where the key holds 192 random bits (unguessable) and the
file is refused after its expiry even before the retention sweep deletes it.
s3: objects in an S3-compatible bucket; the URL is a presigned GET valid until the
image's expiry (at most 7 days, the S3 limit). boto3 is blocking, so calls run in a thread.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from datetime import datetime
from pathlib import Path

from minitoolai.clock import utcnow
from minitoolai.errors import ConfigError

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{32}\.png$")
FILES_PATH = "/api/texttoimage/files/"
S3_MAX_PRESIGN_SECONDS = 7 * 24 * 3600


def new_image_key() -> str:
    return secrets.token_urlsafe(24) + ".png"


class LocalStorage:
    def __init__(self, directory: Path, base_url: str) -> None:
        self.directory = directory
        self.base_url = base_url.rstrip("/")
        directory.mkdir(parents=True, exist_ok=True)

    def path_of(self, key: str) -> Path | None:
        if not KEY_PATTERN.match(key):
            return None
        return self.directory / key

    def _write(self, key: str, data: bytes) -> None:
        # write then rename, so a reader never sees half a file
        tmp = self.directory / f".{key}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.directory / key)

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, key, data)

    async def url(self, key: str, expires_at: datetime) -> str:
        return f"{self.base_url}{FILES_PATH}{key}"

    async def get(self, key: str) -> bytes:
        path = self.path_of(key)
        if path is None:
            raise FileNotFoundError(key)
        return await asyncio.to_thread(path.read_bytes)

    async def delete(self, key: str) -> None:
        path = self.path_of(key)
        if path is not None:
            path.unlink(missing_ok=True)

    async def close(self) -> None:
        """Nothing to release."""


class S3Storage:
    def __init__(self, settings) -> None:
        try:
            import boto3  # optional dependency: the `images` extra
            from botocore.config import Config
        except ImportError:
            raise ConfigError("images.storage = 's3' needs boto3:"
                              " pip install 'minitoolai[images]'") from None

        s3 = settings.s3
        self.bucket = s3.bucket
        self.prefix = s3.prefix
        self._client = boto3.client(
            "s3", endpoint_url=s3.endpoint_url, region_name=s3.region,
            aws_access_key_id=s3.access_key_id, aws_secret_access_key=s3.secret_access_key,
            config=Config(s3={"addressing_style": s3.addressing_style},
                          signature_version="s3v4"))

    async def put(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._client.put_object, Bucket=self.bucket,
                                Key=self.prefix + key, Body=data, ContentType="image/png")

    async def url(self, key: str, expires_at: datetime) -> str:
        seconds = int((expires_at - utcnow()).total_seconds())
        seconds = max(1, min(seconds, S3_MAX_PRESIGN_SECONDS))
        return await asyncio.to_thread(
            self._client.generate_presigned_url, "get_object",
            Params={"Bucket": self.bucket, "Key": self.prefix + key}, ExpiresIn=seconds)

    async def get(self, key: str) -> bytes:
        response = await asyncio.to_thread(self._client.get_object, Bucket=self.bucket,
                                           Key=self.prefix + key)
        return await asyncio.to_thread(response["Body"].read)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._client.delete_object, Bucket=self.bucket,
                                Key=self.prefix + key)

    async def close(self) -> None:
        self._client.close()


def build_storage(settings):
    """The configured storage for images (`settings` is the whole Settings)."""
    images = settings.images
    if images.storage == "s3":
        return S3Storage(images)
    directory = images.images_dir or (settings.data_dir / "images")
    return LocalStorage(Path(directory), settings.base_url)
