"""`kexue chat` prints a reply piece by piece as its tokens are picked, and the pieces make the reply that
`kexue.load(DIR).predict` gives (with generation flags too); beam search arrives in one piece."""
import io

import kexue
from kexue.cli import main as cli
from kexue.cli.use import stream_reply


class Recorder(io.StringIO):
    def __init__(self):
        super().__init__()
        self.writes = []

    def write(self, s):
        self.writes.append(s)
        return super().write(s)


def test_chat_streams_the_predicted_reply(dialogue_dir, monkeypatch):
    turns = ["晓带轻烟间杏花", "晚凝深翠拂平沙"]
    pred = kexue.load(dialogue_dir)
    expected = [pred.predict([turns[:1]], top_p=0.9)[0]["reply"]]
    expected.append(pred.predict([[turns[0], expected[0], turns[1]]], top_p=0.9)[0]["reply"])
    out = Recorder()
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(turns) + "\n"))
    monkeypatch.setattr("sys.stdout", out)
    assert cli(["chat", str(dialogue_dir), "--top-p", "0.9"]) == 0
    assert out.getvalue().splitlines() == expected
    pieces = [w for w in out.writes if w and w != "\n"]
    assert len(pieces) > 2 * 2 and "".join(pieces) == "".join(expected)  # more than one piece per reply


def test_stream_reply_pieces_and_beams(dialogue_dir):
    pred = kexue.load(dialogue_dir)
    context = ["床前明月光", "疑是地上霜"]
    pieces = list(stream_reply(pred, context, {"max_new_tokens": 6}))
    assert "".join(pieces) == pred.predict([context], max_new_tokens=6)[0]["reply"] and len(pieces) > 1
    beams = list(stream_reply(pred, context, {"num_beams": 3, "max_new_tokens": 6}))
    assert beams == [pred.predict([context], num_beams=3, max_new_tokens=6)[0]["reply"]]
