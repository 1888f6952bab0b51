"""C2PA content credentials (credentials.py) and `aigc verify`: files aigc signs with a throwaway CA's
certificate validate with c2pa's own Reader against that CA; one flipped byte, an unsigned file, another
tool's file and a damaged manifest each give one line and exit 1; --replay makes a tiny-model image again
byte for byte."""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

c2pa = pytest.importorskip("c2pa")

SMALL = ["--steps", "2", "--width", "64", "--height", "64", "--seed", "3"]
MADE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
COMPOSITE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
UNSIGNED = {"AIGC_SIGN_CERT": "", "AIGC_SIGN_KEY": ""}


def ok(result):
    assert result.returncode == 0, result.stderr.decode()
    return result


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:
    """A throwaway CA and a signing certificate it issued, as C2PA asks: an EC P-256 key, digitalSignature
    key usage, the emailProtection extended key usage, not a CA. Returns chain, key and ca (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = tmp_path_factory.mktemp("certs")
    now = dt.datetime.now(dt.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aigc tests"),
            ]
        )

    def usage(ca: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
        )

    def cert(subject, issuer, public, signing, ca: bool) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
            .add_extension(usage(ca), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )
        if not ca:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
            ).add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signing.public_key()), critical=False
            )
        return builder.sign(signing, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = cert(name("aigc test CA"), name("aigc test CA"), ca_key.public_key(), ca_key, True)
    leaf = cert(name("aigc test signer"), ca.subject, key.public_key(), ca_key, False)
    pem = serialization.Encoding.PEM
    paths = {"chain": folder / "chain.pem", "key": folder / "key.pem", "ca": folder / "ca.pem"}
    paths["chain"].write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    paths["ca"].write_bytes(ca.public_bytes(pem))
    paths["key"].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.fixture
def signing(certs, monkeypatch) -> dict[str, Path]:
    monkeypatch.setenv("AIGC_SIGN_CERT", str(certs["chain"]))
    monkeypatch.setenv("AIGC_SIGN_KEY", str(certs["key"]))
    return certs


def c2pa_state(path: Path, ca: Path) -> tuple[str, dict]:
    """c2pa's own verdict on a file, trusting `ca`: (validation state, the active manifest)."""
    settings = c2pa.Settings.from_dict(
        {"trust": {"trust_anchors": ca.read_text()}, "verify": {"verify_trust": True}}
    )
    with c2pa.Context(settings) as context, c2pa.Reader(str(path), context=context) as reader:
        store = json.loads(reader.json())
        return reader.get_validation_state(), store["manifests"][store["active_manifest"]]


def assertion(manifest: dict, label: str) -> dict:
    return next(a["data"] for a in manifest["assertions"] if a["label"] == label)


def test_signed_images_and_audio_validate_against_the_trust_anchor(aigc, pipes, vits, signing, tmp_path):
    images = [tmp_path / f"fox.{ext}" for ext in ("png", "jpg", "webp")]
    for path in images:
        ok(aigc("image", "a red fox", "-m", str(pipes["sd"]), *SMALL, "-o", str(path)))
    sounds = [tmp_path / f"hi.{ext}" for ext in ("wav", "flac", "mp3")]
    for path in sounds:
        ok(aigc("speak", "hello there.", "-m", str(vits), "--seed", "1", "-o", str(path)))
    for path in [*images, *sounds]:
        state, manifest = c2pa_state(path, signing["ca"])
        assert state == "Trusted", path
        actions = assertion(manifest, "c2pa.actions.v2")["actions"]
        assert [a["action"] for a in actions] == ["c2pa.created"]
        assert actions[0]["digitalSourceType"] == MADE
        assert actions[0]["softwareAgent"]["name"] == "aigc"
        record = assertion(manifest, "org.aigc.record")
        assert record["seed"] in (3, 1) and record["model"] in (pipes["sd"].name, vits.name)
        assert str(tmp_path.parent) not in json.dumps(manifest)  # no path of this machine
        assert manifest["signature_info"]["common_name"] == "aigc test signer"
    verified = ok(aigc("verify", "--trust", str(signing["ca"]), *map(str, [*images, *sounds])))
    assert verified.stdout.decode().count("signed, intact, and its signer is trusted") == 6
    if shutil.which("exiftool"):  # signing keeps the mark that was written before it
        tags = json.loads(
            subprocess.run(["exiftool", "-j", "-G1", *map(str, images)], capture_output=True).stdout
        )
        assert all(t["XMP-iptcExt:DigitalSourceType"] == MADE for t in tags)
    with Image.open(images[0]) as png:  # and the A1111 record
        assert png.text["parameters"].startswith("a red fox\nSteps: 2")


def test_image_to_image_names_its_init_image_as_the_parent(aigc, pipes, signing, tmp_path):
    init = tmp_path / "start.png"
    Image.new("RGB", (64, 64), (30, 120, 200)).save(init)
    out = tmp_path / "edited.png"
    args = ["-m", str(pipes["sd"]), *SMALL, "--init-image", str(init), "--strength", "0.5", "-o", str(out)]
    ok(aigc("image", "a cat", *args))
    state, manifest = c2pa_state(out, signing["ca"])
    assert state == "Trusted"
    actions = assertion(manifest, "c2pa.actions.v2")["actions"]
    assert [a["action"] for a in actions] == ["c2pa.opened", "c2pa.edited"]
    assert actions[1]["digitalSourceType"] == COMPOSITE
    assert [(i["title"], i["relationship"]) for i in manifest["ingredients"]] == [("start.png", "parentOf")]


def flip_pixel_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[data.index(b"IDAT") + 20] ^= 0x01
    path.write_bytes(bytes(data))


def test_verify_tells_intact_untrusted_tampered_damaged_and_unsigned_apart(aigc, pipes, signing, tmp_path):
    signed = tmp_path / "fox.png"
    ok(aigc("image", "a red fox", "-m", str(pipes["sd"]), *SMALL, "-o", str(signed)))

    untrusted = ok(aigc("verify", str(signed)))  # no trust anchors: intact, signer not trusted: exit 0
    out = untrusted.stdout.decode()
    assert "signed and intact; its signer is not among the trust anchors" in out
    assert "aigc test signer (issued by aigc tests)" in out and "'a red fox'" in out
    assert json.loads(ok(aigc("verify", "--json", str(signed))).stdout)["ok"] is True

    tampered = tmp_path / "tampered.png"
    shutil.copy(signed, tampered)
    flip_pixel_byte(tampered)
    failed = aigc("verify", "--trust", str(signing["ca"]), str(tampered))
    assert failed.returncode == 1
    assert failed.stderr.decode().startswith(
        f"aigc: error: {tampered}: tampered: assertion.dataHash.mismatch"
    )
    assert failed.stderr.count(b"\n") == 1

    damaged = tmp_path / "damaged.png"
    data = bytearray(signed.read_bytes())
    start = data.index(b"caBX") + 200
    data[start : start + 40] = bytes(40)
    damaged.write_bytes(bytes(data))
    failed = aigc("verify", str(damaged))
    assert failed.returncode == 1
    assert failed.stderr.decode().startswith(f"aigc: error: {damaged}: damaged manifest: ")
    assert failed.stderr.count(b"\n") == 1

    unsigned, other = tmp_path / "unsigned.png", tmp_path / "other.png"
    ok(
        aigc(
            "image",
            "a red fox",
            "-m",
            str(pipes["sd"]),
            *SMALL,
            "-o",
            str(unsigned),
            env=UNSIGNED,
        )
    )
    Image.new("RGB", (8, 8)).save(other)  # another tool's file: no mark, no record, no manifest
    for path, marked in ((unsigned, "trainedAlgorithmicMedia (aigc "), (other, "no: it does not say")):
        failed = aigc("verify", str(path))
        assert failed.returncode == 1
        assert failed.stderr.decode() == f"aigc: error: {path}: unsigned: it carries no C2PA manifest\n"
        assert marked in failed.stdout.decode()

    both = aigc("verify", str(signed), str(unsigned))  # several files: a line for each that fails
    assert both.returncode == 1
    assert both.stderr.decode().splitlines() == [
        f"aigc: error: {unsigned}: unsigned: it carries no C2PA manifest",
        "aigc: error: 1 of 2 files failed verification",
    ]
    info = ok(aigc("info", str(signed))).stdout.decode()
    assert "signed by aigc test signer, intact" in info and MADE in info


def test_config_file_credentials_and_trust(aigc, vits, certs, isolated, tmp_path):
    home = isolated / "aigc-home"
    home.mkdir(parents=True, exist_ok=True)
    for name in ("chain", "key", "ca"):
        shutil.copy(certs[name], home / f"{name}.pem")
    (home / "config.toml").write_text(
        '[credentials]\ncert = "chain.pem"\nkey = "key.pem"\ntrust = "ca.pem"\n', encoding="utf-8"
    )
    out = tmp_path / "hi.wav"
    ok(aigc("speak", "hello there.", "-m", str(vits), "-o", str(out)))
    assert "signed, intact, and its signer is trusted" in ok(aigc("verify", str(out))).stdout.decode()


def test_half_a_signing_setup_fails_before_any_work(aigc, certs, tmp_path):
    result = aigc(
        "image", "a cat", "-o", str(tmp_path / "a.png"), env={"AIGC_SIGN_CERT": str(certs["chain"])}
    )
    assert result.returncode == 2
    assert result.stderr.decode() == (
        "aigc: error: Signing needs both a certificate chain and its key: AIGC_SIGN_CERT / AIGC_SIGN_KEY sets "
        "only one\n"
    )
    missing = aigc("verify", str(tmp_path / "nothing.png"))
    assert (
        missing.returncode == 2
        and missing.stderr.decode() == f"aigc: error: No such file: {tmp_path}/nothing.png\n"
    )


def test_replay_makes_the_same_bytes(aigc, pipes, signing, tmp_path):
    signed, plain = tmp_path / "fox.png", tmp_path / "plain.png"
    ok(aigc("image", "a red fox", "-m", str(pipes["sd"]), *SMALL, "-o", str(signed)))
    ok(aigc("image", "a red fox", "-m", str(pipes["sd"]), *SMALL, "-o", str(plain), env=UNSIGNED))
    out = ok(aigc("verify", "--replay", str(signed))).stdout.decode()
    assert "replay      identical bytes (but the C2PA manifest)" in out
    report = json.loads(aigc("verify", "--replay", "--json", str(plain)).stdout)
    assert report["replay"] == {"identical": True, "summary": "identical bytes"}
    assert report["ok"] is False and report["problem"].endswith("unsigned: it carries no C2PA manifest")
    with Image.open(io.BytesIO(plain.read_bytes())) as image:
        assert "caBX" not in image.info


def test_batch_signs_what_it_writes(aigc, pipes, vits, signing, tmp_path):
    jobs = [
        {"id": "fox", "task": "image", "prompt": "a fox", "model": str(pipes["sd"]), "steps": 2, "width": 64,
         "height": 64, "seed": 1, "out": "fox.png"},
        {"id": "hi", "task": "speech", "input": "hello there.", "model": str(vits), "seed": 1, "out": "hi.wav"},
    ]  # fmt: skip
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(job) + "\n" for job in jobs), encoding="utf-8")
    ok(aigc("batch", "jobs.jsonl", "-o", "results.jsonl", "--out-dir", "outs"))
    for name in ("fox.png", "hi.wav"):
        assert c2pa_state(tmp_path / "outs" / name, signing["ca"])[0] == "Trusted", name


def test_a_signing_server_signs_and_the_cli_keeps_its_bytes(aigc, pipes, certs, tmp_path):
    # Speech through a server is encoded by output.encode_audio, signed as the CLI's and batch's are.
    import base64

    from server_helpers import http, server_env, start_server

    env = server_env(tmp_path, AIGC_SIGN_CERT=str(certs["chain"]), AIGC_SIGN_KEY=str(certs["key"]))
    server = start_server(tmp_path, "--preload", str(pipes["sd"]), env=env)
    try:
        body = {
            "model": str(pipes["sd"]),
            "prompt": "a cat",
            "size": "64x64",
            "seed": 2,
            "num_inference_steps": 2,
        }
        status, _, answer = http(server.url + "/v1/images/generations", "POST", body)
        assert status == 200, answer.decode()
        served = tmp_path / "served.png"
        served.write_bytes(base64.b64decode(json.loads(answer)["data"][0]["b64_json"]))
        assert c2pa_state(served, certs["ca"])[0] == "Trusted"
        # The CLI has no key of its own here: a credential in its file can only be the server's, kept whole.
        out = tmp_path / "through.png"
        ran = aigc(
            "image", "a cat", "-m", str(pipes["sd"]), *SMALL, "-o", str(out), env={"AIGC_HOST": server.url}
        )
        ok(ran)
        state, manifest = c2pa_state(out, certs["ca"])
        assert state == "Trusted" and assertion(manifest, "org.aigc.record")["seed"] == 3
    finally:
        assert server.stop() == 0, server.stderr()


def test_formats_c2pa_does_not_cover_are_said_to_be_marked_only(aigc, tmp_path):
    import numpy as np

    from aigc_cli.output import encode_audio

    samples = np.zeros(1600, dtype=np.float32)
    record = {
        "kind": "speech",
        "text": "hi",
        "model": "m",
        "aigc_version": "1",
        "digital_source_type": "trainedAlgorithmicMedia",
    }
    (tmp_path / "a.ogg").write_bytes(encode_audio(samples, 16000, "ogg", record))
    (tmp_path / "notes.txt").write_text("hello")
    for name, why in (("a.ogg", " (it is marked only)"), ("notes.txt", "")):
        failed = aigc("verify", str(tmp_path / name))
        assert failed.returncode == 1
        assert (
            failed.stderr.decode()
            == f"aigc: error: {tmp_path / name}: unsigned: C2PA does not cover this format{why}\n"
        )


def test_mcp_tools_sign_what_they_save(pipes, vits, signing, tmp_path):
    """`aigc mcp`'s files are signed as the CLI's are: an image-to-image names its init image (a file in the
    output folder) as the parent; speech is created."""
    mcp = pytest.importorskip("mcp")
    import anyio

    from aigc_cli.console import LogConsole
    from aigc_cli.mcp.server import build_server
    from aigc_cli.mcp.tools import Toolbox
    from aigc_cli.server.state import ServerState, check_preload

    names = [str(pipes["sd"]), str(vits)]
    state = ServerState(None, names, LogConsole())
    check_preload(state, names)
    toolbox = Toolbox(state, tmp_path / "out")
    toolbox.out_dir.mkdir()
    Image.new("RGB", (64, 64), (30, 120, 200)).save(toolbox.out_dir / "start.png")

    async def main():
        async with mcp.Client(build_server(toolbox)) as client:
            image = await client.call_tool("generate_image", {"prompt": "a cat", "model": names[0], "steps": 2,
                                                              "init_image": "start.png", "strength": 0.5})  # fmt: skip
            speech = await client.call_tool("speak", {"text": "hello there.", "model": names[1]})
            return image, speech

    image, speech = anyio.run(main)
    assert not image.is_error and not speech.is_error, (image.content, speech.content)
    edited = Path(image.structured_content["images"][0]["path"])
    state_, manifest = c2pa_state(edited, signing["ca"])
    assert state_ == "Trusted"
    assert [a["action"] for a in assertion(manifest, "c2pa.actions.v2")["actions"]] == [
        "c2pa.opened",
        "c2pa.edited",
    ]
    assert [(i["title"], i["relationship"]) for i in manifest["ingredients"]] == [("start.png", "parentOf")]
    assert c2pa_state(Path(speech.structured_content["path"]), signing["ca"])[0] == "Trusted"
