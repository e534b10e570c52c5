"""Schemathesis hooks for Warden's API: a driver component is uploaded as
`application/wasm`, which is raw bytes like `application/octet-stream`."""

import schemathesis

schemathesis.serializer.alias("application/wasm", "application/octet-stream")
