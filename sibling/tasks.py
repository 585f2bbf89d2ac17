from sibling.services import worker_heartbeat_record


def worker_heartbeat() -> str:
    return str(worker_heartbeat_record())
