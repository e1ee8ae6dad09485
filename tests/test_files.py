"""Atomic writes behave as ``open(path, "w")`` would, apart from never leaving half a file."""

import json
import os
import stat

import numpy as np
import pytest

from fcn_tf.files import write_atomic, write_json, write_png


def test_a_link_is_written_through_and_permissions_are_kept(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "report.json"
    target.write_text("old")
    target.chmod(0o600)
    link = tmp_path / "report.json"
    link.symlink_to(target)
    write_json(str(link), {"mean_iu": 0.5})
    assert link.is_symlink() and json.loads(target.read_text()) == {"mean_iu": 0.5}
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path / "real")) == ["report.json"]  # no temporary left


def test_a_missing_folder_is_named_and_a_failed_write_leaves_the_old_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere/m\.png: no such folder"):
        write_png(str(tmp_path / "nowhere" / "m.png"), np.zeros((2, 2), np.uint8))
    path = tmp_path / "a.json"
    write_json(str(path), [1])

    def fails(temporary):
        with open(temporary, "w") as file:
            file.write("[2")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(str(path), fails)
    assert json.loads(path.read_text()) == [1] and os.listdir(tmp_path) == ["a.json"]
