"""The XChat web app (docs/app-readme.md): a loopback-only UI over one in-process Client."""
