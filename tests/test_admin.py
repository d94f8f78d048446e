"""Administration in-process: a grant's keys taken from the store's account directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from veilcam.common.errors import VeilcamError
from veilcam.common.home import Home
from veilcam.common.keystore import new_keystore
from veilcam.common.keywrap import key_id_of
from veilcam.store_node.accounts import AccountStore

from tests.conftest import PASSWORD
from veilcam.admin import user_public_keys


def test_keys_known_only_from_the_store_need_the_key_id_the_user_saw(tmp_path: Path) -> None:
    home = Home(tmp_path)
    ks = new_keystore("dave", PASSWORD)  # registered elsewhere: no keystore in this home
    assert AccountStore.keystore_in(home, "dave") is None
    assert not home.accounts_path.exists()  # looking up creates no account directory
    AccountStore.add_account(home, "dave", ks.login_secret, json.dumps(ks.doc))
    public, pq_public = user_public_keys(home, "dave", key_id_of(ks.public_raw).hex())
    assert (public, pq_public) == (ks.public_raw, ks.pq_public_raw)
    with pytest.raises(VeilcamError, match="--key-id"):
        user_public_keys(home, "dave")
    with pytest.raises(VeilcamError, match="do not grant"):
        user_public_keys(home, "dave", "00" * 16)
    with pytest.raises(VeilcamError, match="no user 'erin'"):
        user_public_keys(home, "erin")
