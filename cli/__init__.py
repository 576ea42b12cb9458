"""`chorus`: the command line, a client of the HTTP API (plus `up`/`down`, which start the stack).

Where it finds the API and its key, first match wins:

* URL: ``--api-url``, ``CHORUS_API_URL``, the credentials file, then Serve's address from settings;
* key: ``--key``, ``CHORUS_API_KEY``, then the credentials file.

`chorus up` creates an admin key when it has none that works, prints it once and saves it with the
URL in ``$XDG_CONFIG_HOME/chorus/credentials`` (``~/.config/chorus/credentials``, mode 0600), so
every later command works with no configuration. Any failure prints one line and exits 1.

Importing the package imports no Ray, Serve, Redis client or HTTP client: `chorus --help` and the
API commands start in a fraction of a second, and `up`/`down` import what they need themselves.
Output is printed with rich markup off, so a `[...]` in an id, a post or an error message (a
regex such as `^[a-z0-9]`) is shown as it is.

The layout: ``main`` (the parser and dispatch), ``client`` (where the API is, the key, HTTP and
the event stream), ``render`` (tables, money, wrapping), ``jobs`` (following a job's events) and
``commands/`` (one module per command group).
"""
