"""The gateway's security building blocks, each usable on its own.

* :mod:`~sincere.serve.security.keys`, :mod:`~.tokens`, :mod:`~.storage`,
  :mod:`~.keystore`, :mod:`~.windows`: client and admin API keys stored as salted
  hashes, per-key limits (requests and tokens per minute over a sliding window) and a
  spend budget with reserve-then-settle accounting, persisted in SQLite or a keys file;
* :mod:`~.policy`: the check a front door runs on each request (401 / 402 / 403 / 429,
  or an authorised context carrying the budget reservation);
* :mod:`~.audit`, :mod:`~.metrics`: a JSON-lines audit log of state changes and
  Prometheus metrics per tenant;
* :mod:`~.credentials`: upstream secrets that never print, and redaction of URLs and text;
* :mod:`~.tls`: a server ``ssl.SSLContext`` from a certificate and key file;
* :mod:`~.envelope`, :mod:`~.seal_proxy`, :mod:`~.confidential_client`: confidential
  mode, HPKE (RFC 9180) sealed requests and responses, and the ``sincere seal`` proxy
  that opens them in front of an engine.

See docs/security.md. Import submodules directly; this package imports nothing heavy.
"""
