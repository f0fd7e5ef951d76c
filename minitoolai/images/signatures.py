"""Job tickets: the signature is an HMAC of the job id under the server's secret.

Checked before the database is asked anything, and in constant time, so a wrong signature
costs and answers exactly what an unknown job does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def sign_job(secret: str, job_id: int) -> str:
    digest = hmac.new(secret.encode(), f"image-job:{job_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def signature_ok(secret: str, job_id: int, signature: str) -> bool:
    return hmac.compare_digest(sign_job(secret, job_id).encode(), signature.encode())
