"""The README's verification example for receivers works against the engine's signature."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from collector.webhook_signing import sign

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_verify() -> Any:
    text = README.read_text()
    section = text[text.index("**The signature.**") :]
    [code] = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)[:1]
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)  # our own documentation, run as written
    return scope["verify"]


def test_the_readme_example_accepts_a_signature_and_refuses_the_rest() -> None:
    verify = readme_verify()
    body = b'{"id":4,"type":"payment.failed"}'
    now = int(time.time())
    header = sign(body, ["new-secret-0123456789", "old-secret-0123456789"], timestamp=now)
    assert verify(body, header, ["old-secret-0123456789"])
    assert verify(body, header, ["new-secret-0123456789"])
    assert not verify(body, header, ["another-secret-0123456"])
    assert not verify(body + b" ", header, ["new-secret-0123456789"])
    stale = sign(body, ["new-secret-0123456789"], timestamp=now - 301)
    assert not verify(body, stale, ["new-secret-0123456789"])
    assert not verify(body, "v1=" + header.split("v1=")[1], ["new-secret-0123456789"])
