#!/usr/bin/env python3
"""The reference for docket's attachment bytes: Python's `email` package.

For each message file given, prints one JSON line:
  {"file": path, "parts": [{"size", "sha256", "content_type", "filename"}...],
   "forwarded_ids": [Message-ID of each message/rfc822 part's message...]}
where parts are every non-container part anywhere in the message (walk()), decoded with
`policy.default` and `get_payload(decode=True)`: the bytes left after undoing the
Content-Transfer-Encoding.
"""
import email
import hashlib
import json
import sys
from email import policy


def describe(path):
    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f, policy=policy.default)
    parts, forwarded = [], []
    for part in msg.walk():
        if part.get_content_type() in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner:
                forwarded.append(str(inner[0].get("message-id", "") or ""))
            continue
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if payload is None:
            continue
        parts.append({
            "size": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(),
            "content_type": part.get_content_type(),
            "filename": part.get_filename(),
        })
    return {"file": path, "parts": parts, "forwarded_ids": forwarded}


for p in sys.argv[1:]:
    try:
        print(json.dumps(describe(p)))
    except Exception as e:  # a file Python cannot read is reported, not fatal
        print(json.dumps({"file": p, "error": repr(e)}))
