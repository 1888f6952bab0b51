"""`aigc info FILE`: read back what a generated file records."""

from __future__ import annotations

from pathlib import Path

from ..metadata import read_metadata
from ..output import write_json_line, write_text


def run_info(file: str, as_json: bool) -> None:
    record = read_metadata(Path(file))  # a missing file, or one aigc did not write: exit 2, saying which
    record["marked"], record["credentials"] = provenance(Path(file))
    if as_json:
        write_json_line(record)
        return
    parameters = record.pop("parameters", None)
    width = max((len(key) for key in record), default=0)
    lines = [f"{key:<{width}}  {value}" for key, value in record.items() if value is not None]
    if parameters:
        lines += ["", parameters]
    write_text("\n".join(lines) + "\n")


def provenance(path: Path) -> tuple[str | None, str]:
    """(the IPTC digital source type the file says, or None; the state of its C2PA content credentials in
    a few words: none, signed and intact (trusted or not), tampered or invalid, damaged, not checked)."""
    import importlib.util

    from ..credentials import NEEDS_C2PA, read_credential, trust_anchors
    from ..marking import read_mark

    marked, _tool = read_mark(path.read_bytes())
    if importlib.util.find_spec("c2pa") is None:
        return marked, f"not checked ({NEEDS_C2PA})"
    credential = read_credential(path, trust_anchors())
    if credential is None:
        return marked, "none (unsigned)"
    signer = credential.signer.get("common_name") or "unknown"
    states = {
        "Trusted": f"signed by {signer}, intact, trusted",
        "Valid": f"signed by {signer}, intact, signer not among the trust anchors",
        "Damaged": "a damaged manifest",
    }
    first = credential.failures[0] if credential.failures else ""
    return marked, states.get(credential.state, f"signed by {signer}, does not verify: {first}")
