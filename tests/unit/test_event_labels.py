from gateway.dockerapi.common import without_project_label

LABEL = "org.openstack.moorage.project"


def run(chunks, project="abc"):
    return list(without_project_label(iter(chunks), project))


def test_label_removed_wherever_it_stands_and_nothing_else_changes():
    first = f'{{"a":{{"{LABEL}":"abc","b":"1"}}}}\n'.encode()
    middle = f'{{"a":{{"x":"0","{LABEL}":"abc","y":"1"}}}}\n'.encode()
    alone = f'{{"a":{{"{LABEL}":"abc"}}}}\n'.encode()
    out = b"".join(run([first + middle, alone]))
    assert out == b'{"a":{"b":"1"}}\n{"a":{"x":"0","y":"1"}}\n{"a":{}}\n'


def test_events_split_across_chunks_and_the_head_flush_passes_at_once():
    event = f'{{"a":{{"{LABEL}":"abc","b":"1"}}}}\n'.encode()
    out = run([b"", event[:10], event[10:]])
    assert out[0] == b""
    assert b"".join(out) == b'{"a":{"b":"1"}}\n'


def test_another_projects_value_is_left_alone():
    event = f'{{"a":{{"{LABEL}":"other"}}}}\n'.encode()
    assert b"".join(run([event])) == event
