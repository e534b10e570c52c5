#!/usr/bin/env python3
"""httpbin (the PyPI package, pinned in scripts/setup) on 127.0.0.1, for the http_json
driver's end-to-end tests. Nothing here changes how httpbin answers: this only starts its
WSGI app under Werkzeug's threaded HTTP/1.1 server and keeps the per-request log quiet.

    python tests/sims/httpbin_server.py --port 8080 [--host 127.0.0.1]
"""
import argparse
import logging
import warnings

from werkzeug.serving import run_simple


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    options = parser.parse_args()
    # httpbin logs a warning at import when the optional flasgger (Swagger UI) is absent;
    # the API it serves is the same either way.
    logging.getLogger("httpbin").setLevel(logging.ERROR)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    from httpbin import app

    app.logger.setLevel(logging.ERROR)
    run_simple(options.host, options.port, app, threaded=True)


if __name__ == "__main__":
    main()
