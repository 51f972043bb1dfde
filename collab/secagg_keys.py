"""Cross-plant statistics, part 4: a plant's key pair for secure aggregation and signatures over protocol files.

A plant has two private keys, both kept only in its vault (entry ``collab/secagg/identity.json``, see
:mod:`collab.secagg_plant`): an age X25519 identity (shares addressed to the plant are encrypted to its public half,
through :mod:`collab.crypto_age`) and an Ed25519 signing key (every share and partial sum it sends is signed).

Signatures reuse the Ed25519 code of :mod:`detection.package` (the project's one audited signing path; no new
importer of ``cryptography``). Domain separation: what is signed is
``detection.package.SIGNING_CONTEXT + SECAGG_CONTEXT + canonical JSON``, and a model-package manifest always starts
with ``{`` where a secagg message starts with ``SECAGG_CONTEXT``, so a signature made for one can never pass as the
other. Plant signing keys are also never in the trusted model-signer list.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from analysis.errors import ModelPackageError
from collab.crypto_age import generate_identity, public_key_of
from collab.errors import CollabError
from collab.secagg_protocol import PlantCard, SecAggError, canonical_json, check_pseudonym
from detection import package

SECAGG_CONTEXT = b"crystal-qc secagg v1\n"


@dataclass(frozen=True, repr=False, eq=False)
class PlantKeys:
    """The private keys of one plant (never printed: ``repr`` shows the pseudonym only)."""

    pseudonym: str
    age_identity: str
    signing_key: Any  # an Ed25519 private key object from detection.package

    def __repr__(self) -> str:
        return f"PlantKeys({self.pseudonym!r})"

    @classmethod
    def generate(cls, pseudonym: str) -> PlantKeys:
        identity, _ = generate_identity()
        return cls(check_pseudonym(pseudonym), identity, package.generate_private_key())

    def card(self) -> PlantCard:
        """The public card handed to the researcher."""
        return PlantCard(self.pseudonym, public_key_of(self.age_identity),
                         package.public_key_of(self.signing_key).hex())

    def to_json(self) -> bytes:
        """Secret! Only for storing in the vault."""
        return json.dumps({"pseudonym": self.pseudonym, "age_identity": self.age_identity,
                           "signing_key_pem": package.private_key_pem(self.signing_key).decode("ascii")}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PlantKeys:
        try:
            obj = json.loads(data)
            keys = cls(check_pseudonym(obj["pseudonym"]), str(obj["age_identity"]),
                       package.load_private_key(obj["signing_key_pem"].encode("ascii")))
            keys.card()  # parses the age identity
            return keys
        except (ValueError, KeyError, TypeError, AttributeError, ModelPackageError, CollabError) as e:
            raise SecAggError("The plant's stored secure-aggregation keys are unreadable; create new keys and hand"
                              " the new plant card to the researcher.") from e

    def matches(self, card: PlantCard) -> bool:
        return self.card() == card


def sign(body: dict[str, Any], keys: PlantKeys) -> dict[str, Any]:
    """``{"body": body, "signature": hex}`` signed by the plant."""
    signature = json.loads(package.sign_manifest(SECAGG_CONTEXT + canonical_json(body), keys.signing_key))
    return {"body": body, "signature": signature["signature"]}


def verify(signed: object, signer: PlantCard, *, what: str) -> dict[str, Any]:
    """The body of ``signed`` if it carries a valid signature of ``signer``. Raises SecAggError otherwise."""
    if not isinstance(signed, dict) or set(signed) != {"body", "signature"} or not isinstance(signed["body"], dict):
        raise SecAggError(f"The {what} is malformed (expected a signed body).")
    raw = bytes.fromhex(signer.signing_key)
    key_id = package.fingerprint(raw)
    signature = package.canonical_json({"algorithm": "ed25519", "key_id": key_id, "signature": signed["signature"]})
    try:
        package.verify_signature(SECAGG_CONTEXT + canonical_json(signed["body"]), signature, {key_id: raw})
    except (ModelPackageError, TypeError) as e:
        raise SecAggError(f"The {what} from {signer.pseudonym} fails its signature check: it was altered after"
                          f" {signer.pseudonym} signed it, or {signer.pseudonym} did not make it. Refused; ask for"
                          " a fresh copy.") from e
    return signed["body"]
