"""What the app allows given how it was started: the A1111 rule for apps shared on a network, said out loud.

A1111 silently disables extension management under --listen (its issue #7153 and many like it). We apply the
same rule, for the same reason (anyone on the LAN could install code), but every refusal says why and which
flag lifts it, and the Extensions tab shows the rule before anyone clicks.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from modules.errors import AccessDenied


@dataclass(frozen=True)
class AccessPolicy:
    shared_on_network: bool
    insecure_extension_access: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AccessPolicy:
        shared = bool(args.listen or args.share or args.server_name)
        return cls(shared_on_network=shared, insecure_extension_access=bool(args.enable_insecure_extension_access))

    @property
    def extension_management_allowed(self) -> bool:
        return not self.shared_on_network or self.insecure_extension_access

    @property
    def server_paths_allowed(self) -> bool:
        """Whether requests may name folders on the server (batch from folder, install from a local path)."""
        return self.extension_management_allowed

    def refusal(self, action: str) -> str:
        return (f"{action} is disabled because the app is shared on the network (--listen, --share or "
                "--server-name), where anyone who can reach it could run code on this machine. Restart with "
                "--enable-insecure-extension-access if you trust everyone on this network.")

    def check_extension_management(self, action: str) -> None:
        if not self.extension_management_allowed:
            raise AccessDenied(self.refusal(action))

    def check_server_paths(self, action: str, field: str | None = None) -> None:
        if not self.server_paths_allowed:
            raise AccessDenied(self.refusal(action), field=field)
