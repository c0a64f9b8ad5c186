"""The first program inside a sandbox: set its limits, drop to its uid, then become the real command.

Run as `python -I -S launcher.py CONFIG_JSON -- ARGV...`. Standard library only: it runs
before anything of the sandbox can be trusted, with no site-packages. Limits set here,
after the sandbox's user namespace exists, count processes per sandbox rather than per
host user; and when the app runs as root, the switch to an unprivileged uid happens here
(bwrap keeps only CAP_SETUID and CAP_SETGID for this), so no sandboxed code ever runs as root.
"""

import json
import os
import resource
import sys


def main(argv: list[str]) -> None:
    config = json.loads(argv[1])
    if argv[2] != "--" or len(argv) < 4:
        raise SystemExit("usage: launcher.py CONFIG_JSON -- COMMAND [ARG...]")
    command = argv[3:]
    for name, value in config.get("limits", {}).items():
        resource.setrlimit(getattr(resource, name), (value, value))
    if "uid" in config:
        os.setgroups([])
        os.setgid(config["gid"])
        os.setuid(config["uid"])  # clears every capability: no way back to root
    os.chdir(config["cwd"])
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv)
