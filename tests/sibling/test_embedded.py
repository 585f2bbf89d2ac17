"""The development daemon: starts once, keeps its data, stops cleanly, restarts on the same data."""

from pymongo import MongoClient

from sibling import embedded


def test_daemon_keeps_data_across_a_clean_restart(tmp_path):
    port = embedded.free_port()
    paths = {"data_dir": tmp_path / "mongo", "pid_file": tmp_path / "mongo.pid"}
    start = {"port": port, "log_file": tmp_path / "mongo.log", **paths}
    try:
        assert embedded.daemon_start(**start) is True
        assert embedded.daemon_start(**start) is False  # one answers already: no second server
        client = MongoClient(embedded.server_uri(embedded.DEFAULT_HOST, port))
        client.devdb.things.insert_one({"kept": True})
        client.close()

        assert embedded.daemon_stop(pid_file=paths["pid_file"]) is True
        assert not embedded.answers(embedded.DEFAULT_HOST, port)
        assert not paths["pid_file"].exists()

        # A stale WiredTiger lock would make this second start fail.
        assert embedded.daemon_start(**start) is True
        client = MongoClient(embedded.server_uri(embedded.DEFAULT_HOST, port))
        assert client.devdb.things.find_one({}, {"_id": 0}) == {"kept": True}
        client.close()
    finally:
        embedded.daemon_stop(pid_file=paths["pid_file"])
    assert embedded.daemon_stop(pid_file=paths["pid_file"]) is False
