"""``rtmo-video``: in-order reassembly, person tracking, and the tool end to end against a real server.

The tracker is measured on synthetic sequences with known identities
(crossing, occlusion, a crowd, leaving and re-entering) with motmetrics'
IDF1 and ID switches. The end-to-end tests run ``rtmo-video`` as a
user would, on small generated videos, and check every frame's people
against the server's answer for the same frame sent on its own.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from rtmo_triton import spec
from rtmo_triton.client import infer
from rtmo_triton.client.tracking import PoseTracker
from rtmo_triton.client.video_outputs import frame_record
from rtmo_triton.client.video_pipeline import InOrder, Pipeline, ServerLost
from rtmo_triton.client.video_sender import Reply
from rtmo_triton.people import People
from rtmo_triton.serve.local import free_port

from .golden import IMAGES

ROOT = Path(__file__).resolve().parents[1]
TOOL = Path(sys.executable).parent / "rtmo-video"  # the console script, as users run it
FPS = 25.0
SIZE = (320, 240)
JPEG_QUALITY = 90
"""The tool's default: the test re-encodes frames exactly as the tool does."""


# --- in-order reassembly ---------------------------------------------------------------


def test_in_order_releases_items_in_sequence_whatever_the_arrival_order():
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(1, 30)
        arrival = list(range(n))
        rng.shuffle(arrival)
        order: InOrder[str] = InOrder()
        released = []
        for seq in arrival:
            out = order.push(seq, f"item{seq}")
            released += out
            assert len(released) == order.next  # everything before `next` is out, nothing after
        assert released == [f"item{i}" for i in range(n)]
        assert len(order) == 0


def test_in_order_holds_items_behind_a_gap_and_refuses_a_repeat():
    order: InOrder[int] = InOrder()
    assert order.push(1, 1) == [] and order.push(2, 2) == []
    assert len(order) == 2
    assert order.push(0, 0) == [0, 1, 2]
    with pytest.raises(ValueError):
        order.push(1, 1)
    order.push(4, 4)
    with pytest.raises(ValueError):
        order.push(4, 4)


class _Frame:
    def __init__(self, index: int) -> None:
        self.index, self.image, self.data = index, None, None


def _people(index: int) -> People:
    """One person whose score carries the frame index, so the emitted order is checkable."""
    z = np.zeros
    return People(z((1, 4), np.float32), np.array([index], np.float32), z((1, 17, 2), np.float32),
                  z((1, 17), np.float32), latency_ms=1.0)


class _SlowSender:
    """Answers after a random delay, so replies come back out of order; records the concurrency seen."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.active = self.most = 0
        self.frames = {}

    def __call__(self, image, data=None) -> Reply:
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
            delay = self.rng.uniform(0, 0.02)
        time.sleep(delay)
        with self.lock:
            self.active -= 1
        return Reply(_people(int(image)))


def _run_pipeline(n: int, in_flight: int, every: int = 1, keep_skipped: bool = False):
    sender, emitted = _SlowSender(), []
    pipeline = Pipeline(lambda image, data: sender(image), lambda f, p: emitted.append((f.index, p)),
                        in_flight=in_flight, every=every, keep_skipped=keep_skipped)
    for i in range(n):
        frame = _Frame(i)
        frame.image = i  # the sender echoes it back as the person's score
        pipeline.feed(frame)
    pipeline.finish()
    pipeline.close()
    return pipeline, sender, emitted


def test_pipeline_emits_in_frame_order_with_requests_overlapping():
    pipeline, sender, emitted = _run_pipeline(60, in_flight=4)
    assert [i for i, _ in emitted] == list(range(60))
    assert [int(p.scores[0]) for _, p in emitted] == list(range(60))  # each frame got its own reply
    assert 1 < sender.most <= 4
    assert pipeline.stats.processed == 60 and pipeline.stats.failed == 0


def test_pipeline_every_nth_frame_with_skipped_frames_kept_in_place():
    _, _, emitted = _run_pipeline(20, in_flight=3, every=3, keep_skipped=True)
    assert [i for i, _ in emitted] == list(range(20))
    assert [i for i, p in emitted if p is not None] == list(range(0, 20, 3))
    _, _, sent_only = _run_pipeline(20, in_flight=3, every=3)
    assert [i for i, _ in sent_only] == list(range(0, 20, 3))


def test_pipeline_stops_when_the_server_is_lost():
    def send(image, data):
        return Reply(People.failure("unreachable"), fatal=True)

    pipeline = Pipeline(send, lambda f, p: None, in_flight=2)
    with pytest.raises(ServerLost, match="unreachable"):
        for i in range(10):
            pipeline.feed(_Frame(i))
        pipeline.finish()
    pipeline.close()


def test_frame_record_uses_the_served_keypoint_names():
    names = [f"joint{i}" for i in range(17)]
    record = frame_record(3, 0.12, _people(5), [7], names)
    assert record["frame"] == 3 and record["time_s"] == 0.12
    [person] = record["people"]
    assert person["track_id"] == 7 and person["score"] == 5.0
    assert [k["name"] for k in person["keypoints"]] == names
    default = frame_record(3, 0.12, _people(5), [None])["people"][0]
    assert [k["name"] for k in default["keypoints"]] == list(spec.COCO.names)


# --- tracking on synthetic sequences ------------------------------------------------------

# a standing person in a unit box (x right, y down), COCO keypoint order
_TEMPLATE = np.array([
    (0.50, 0.08), (0.54, 0.06), (0.46, 0.06), (0.58, 0.08), (0.42, 0.08),
    (0.70, 0.22), (0.30, 0.22), (0.76, 0.38), (0.24, 0.38), (0.78, 0.52), (0.22, 0.52),
    (0.62, 0.55), (0.38, 0.55), (0.64, 0.76), (0.36, 0.76), (0.65, 0.97), (0.35, 0.97)])


def _person(gt_id, cx, cy, h, rng, noise=2.0):
    """A detection of person ``gt_id`` (None: a false positive) centred at (cx, cy), ``h`` px tall."""
    w = 0.4 * h
    box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    kpts = box[:2] + _TEMPLATE * (w, h) + rng.normal(0, noise, _TEMPLATE.shape)
    return gt_id, box + rng.normal(0, noise, 4), kpts, rng.uniform(0.5, 1.0, len(_TEMPLATE))


def _crossing(rng, hidden_behind: bool):
    """Two people walk towards each other along one line; the one behind may vanish while they overlap."""
    seq = []
    for t in range(80):
        xa, xb = 200 + 11 * t, 1080 - 11 * t
        frame = [_person(1, xa, 400, 300, rng)]
        if not hidden_behind or abs(xa - xb) > 40:
            frame.append(_person(2, xb, 405, 290, rng))
        seq.append(frame)
    return seq


def _crowd(rng, n=150, k=6, size=(1280, 720), miss=0.1, false_positive=0.05):
    """``k`` people walking and bouncing off the frame's edges; missed detections and false positives."""
    w, h = size
    pos = rng.uniform((100, 200), (w - 100, h - 200), (k, 2))
    vel = rng.normal(0, 6, (k, 2))
    heights = rng.uniform(150, 300, k)
    seq = []
    for _ in range(n):
        pos += vel
        for axis, (lo, hi) in enumerate(((60, w - 60), (160, h - 160))):
            vel[(pos[:, axis] < lo) | (pos[:, axis] > hi), axis] *= -1
        frame = [_person(j, *pos[j], heights[j], rng) for j in range(k) if rng.random() > miss]
        if rng.random() < false_positive:
            gt_id, box, kpts, scores = _person(None, *rng.uniform((0, 0), size), 200, rng)
            frame.append((gt_id, box, kpts, scores * 0.3))
        seq.append(frame)
    return seq


def _occluded(rng, hidden=range(40, 52)):
    """One person stands still; another walks and is unseen for 12 frames (less than the tracker's memory)."""
    walker = [_person(2, 500 + 6 * t, 420, 260, rng) for t in range(100)]
    return [[_person(1, 300, 400, 280, rng)] + ([] if t in hidden else [walker[t]]) for t in range(100)]


def _leaves_and_returns(rng, width=1280, away=60):
    """A person walks out of the right edge, stays out ``away`` frames, and walks back in."""
    seq, x, v, out_for = [], 900.0, 15.0, 0
    for _ in range(200):
        frame = [_person(1, 300, 400, 280, rng)]
        if 0 <= x <= width:
            frame.append(_person(2, x, 420, 260, rng))
        seq.append(frame)
        if x > width + 40 and v > 0:
            out_for += 1
            if out_for >= away:
                v = -v
        else:
            x += v
    return seq


def _mot_metrics(seq, period: int = 1) -> dict:
    """IDF1, ID switches and MOTA of the tracker on ``seq`` (boxes matched at IoU >= 0.5)."""
    import motmetrics as mm

    tracker = PoseTracker(period=period)
    acc = mm.MOTAccumulator(auto_id=True)
    for frame in seq:
        boxes = np.array([p[1] for p in frame]).reshape(-1, 4)
        ids = tracker.update_arrays(boxes, np.array([p[2] for p in frame]).reshape(-1, 17, 2),
                                    np.array([p[3] for p in frame]).reshape(-1, 17))
        truth = [(p[0], p[1]) for p in frame if p[0] is not None]
        found = [(i, b) for i, b in zip(ids, boxes) if i is not None]
        xywh = lambda b: np.c_[b[:, :2], b[:, 2:] - b[:, :2]] if len(b) else b.reshape(0, 4)  # noqa: E731
        distances = mm.distances.iou_matrix(xywh(np.array([b for _, b in truth]).reshape(-1, 4)),
                                            xywh(np.array([b for _, b in found]).reshape(-1, 4)), max_iou=0.5)
        acc.update([t for t, _ in truth], [i for i, _ in found], distances)
    summary = mm.metrics.create().compute(acc, metrics=["idf1", "num_switches", "mota"], name="seq")
    result = summary.to_dict("records")[0]
    print(f"IDF1 {result['idf1']:.3f}, ID switches {result['num_switches']}, MOTA {result['mota']:.3f}, "
          f"IDs handed out {tracker.total_ids}")
    return result


@pytest.mark.parametrize("hidden_behind", [False, True], ids=["both-visible", "one-hidden"])
def test_tracker_keeps_identities_of_two_people_crossing(hidden_behind):
    m = _mot_metrics(_crossing(np.random.default_rng(0), hidden_behind))
    assert m["num_switches"] == 0
    assert m["idf1"] > 0.95


def test_tracker_keeps_identities_through_a_short_occlusion():
    m = _mot_metrics(_occluded(np.random.default_rng(1)))
    assert m["num_switches"] == 0
    assert m["idf1"] > 0.95


@pytest.mark.parametrize("every", [1, 2])
def test_tracker_follows_a_crowd_with_misses_and_false_positives(every):
    m = _mot_metrics(_crowd(np.random.default_rng(2))[::every], period=every)
    assert m["num_switches"] <= 2
    assert m["idf1"] > 0.9


def test_a_person_who_leaves_for_long_returns_under_one_new_id():
    """No appearance model: the returning person gets a new ID (one switch), nobody else is disturbed."""
    m = _mot_metrics(_leaves_and_returns(np.random.default_rng(3)))
    assert m["num_switches"] == 1
    assert m["idf1"] > 0.8


# --- the tool against a real server -------------------------------------------------------


@pytest.fixture(scope="module")
def server(default_k_server):
    return default_k_server


def _picture(width: int, height: int) -> np.ndarray:
    photo = cv2.imread(str(IMAGES / "coco" / "000000000785.jpg"), cv2.IMREAD_COLOR)
    return cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)


def _write_video(path: Path, frames: int, codec: str = "mp4v") -> Path:
    """A camera panning over a photo: each frame differs, so a frame given another's people shows."""
    w, h = SIZE
    wide = _picture(w + 3 * frames, h)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), FPS, SIZE)
    for i in range(frames):
        writer.write(np.ascontiguousarray(wide[:, 3 * i:3 * i + w]))
    writer.release()
    return path


def _read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    return frames


def _over_grpc(server) -> tuple[str, ...]:
    return "--url", server.grpc_url, "--protocol", "grpc"


def _run_tool(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check_people(record: dict, expected: People) -> None:
    """A JSON line's people against the server's people for the same frame (JSON rounds to 0.01 px)."""
    assert "error" not in record and expected.ok
    people = record["people"]
    assert len(people) == expected.num_people
    if people:
        np.testing.assert_allclose([p["box"] for p in people], expected.boxes, atol=0.006)
        np.testing.assert_allclose([[(k["x"], k["y"]) for k in p["keypoints"]] for p in people],
                                   expected.keypoints, atol=0.006)


def _jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()


@pytest.mark.server
def test_video_over_grpc_every_frame_in_order_with_ids_and_an_annotated_copy(server, tmp_path):
    video = _write_video(tmp_path / "walk.mp4", 20)
    out, jsonl = tmp_path / "annotated.mp4", tmp_path / "people.jsonl"
    run = _run_tool(video, *_over_grpc(server), "--concurrency", 4, "--out", out, "--jsonl", jsonl)
    print(run.stderr)
    assert run.returncode == 0, run.stderr
    assert "frames/s" in run.stderr and "p95" in run.stderr

    records = _lines(jsonl)
    assert [r["frame"] for r in records] == list(range(20))
    np.testing.assert_allclose([r["time_s"] for r in records], np.arange(20) / FPS, atol=1e-3)
    source_frames = _read_video(video)
    expected = infer(server.grpc_url, "grpc", [_jpeg(f) for f in source_frames], concurrency=2)
    names = list(spec.COCO.names)
    tracked = 0
    for record, people in zip(records, expected, strict=True):
        _check_people(record, people)
        for person in record["people"]:
            assert [k["name"] for k in person["keypoints"]] == names
            assert person["track_id"] is None or isinstance(person["track_id"], int)
            tracked += person["track_id"] is not None
    assert tracked > 0
    for record in records:  # one ID is never given to two people of a frame
        ids = [p["track_id"] for p in record["people"] if p["track_id"] is not None]
        assert len(ids) == len(set(ids))

    written = _read_video(out)
    assert len(written) == 20
    assert written[0].shape[:2] == (SIZE[1], SIZE[0])
    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS)
    cap.release()


@pytest.mark.server
def test_folder_over_http_every_other_frame_untracked(server, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = _read_video(_write_video(tmp_path / "walk.mp4", 6))
    for i, image in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), image)
    out, jsonl = tmp_path / "annotated.avi", tmp_path / "people.jsonl"
    run = _run_tool(folder, "--url", server.http_url, "--protocol", "http", "--every", 2, "--no-track",
                    "--concurrency", 2, "--out", out, "--jsonl", jsonl)
    assert run.returncode == 0, run.stderr
    records = _lines(jsonl)
    assert [r["frame"] for r in records] == [0, 2, 4]
    expected = infer(server.http_url, "http", [(folder / f"{i:04d}.png").read_bytes() for i in (0, 2, 4)])
    for record, people in zip(records, expected, strict=True):
        _check_people(record, people)  # a folder's files are sent as they are (PNG here: lossless)
        assert all(p["track_id"] is None for p in record["people"])
    assert len(_read_video(out)) == 6  # skipped frames keep their place in the video


@pytest.mark.server
def test_ctrl_c_stops_cleanly_leaving_valid_files(server, tmp_path):
    video = _write_video(tmp_path / "long.mp4", 60)
    out, jsonl = tmp_path / "annotated.mp4", tmp_path / "people.jsonl"
    command = [str(TOOL), str(video), *_over_grpc(server), "--concurrency", "2",
               "--out", str(out), "--jsonl", str(jsonl)]
    # as at a terminal: a test run started in the background inherits SIGINT ignored, which the tool keeps
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (jsonl.exists() and len(jsonl.read_text().splitlines()) >= 2):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no frame done"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    records = _lines(jsonl)
    assert 2 <= len(records) < 60
    assert [r["frame"] for r in records] == list(range(len(records)))
    assert len(_read_video(out)) == len(records)  # the MP4 was finished, with every frame done


def _cut_avi(path: Path, frames: int) -> tuple[Path, int]:
    """An MJPEG AVI cut in half: its header still declares every frame. Returns it and the frames it holds."""
    whole = _write_video(path.with_name("whole.avi"), frames, codec="MJPG").read_bytes()
    path.write_bytes(whole[:len(whole) // 2])
    return path, len(_read_video(path))


@pytest.mark.server
def test_a_source_cut_short_is_reported_after_its_frames_are_written(server, tmp_path):
    cut, readable = _cut_avi(tmp_path / "cut.avi", 10)
    assert 0 < readable < 10
    jsonl = tmp_path / "people.jsonl"
    run = _run_tool(cut, *_over_grpc(server), "--jsonl", jsonl)
    assert run.returncode == 4, run.stderr
    assert f"ended after {readable} of the 10 frames" in run.stderr
    assert [r["frame"] for r in _lines(jsonl)] == list(range(readable))


@pytest.mark.server
def test_a_stalled_source_times_out_instead_of_hanging(server, tmp_path):
    cut, readable = _cut_avi(tmp_path / "half.avi", 10)
    fifo = tmp_path / "stream"
    os.mkfifo(fifo)
    # nothing writes: opening blocks inside OpenCV
    run = _run_tool(fifo, *_over_grpc(server), "--source-timeout", 2, timeout=60)
    assert run.returncode == 4 and "could not open" in run.stderr, run.stderr

    # a writer sends half a video and then goes quiet while keeping the pipe open
    writer = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "with open(sys.argv[1], 'wb') as f:\n"
                               "    f.write(open(sys.argv[2], 'rb').read()); f.flush(); time.sleep(60)",
                               str(fifo), str(cut)])
    try:
        jsonl = tmp_path / "people.jsonl"
        run = _run_tool(fifo, *_over_grpc(server), "--source-timeout", 2, "--jsonl", jsonl, timeout=60)
    finally:
        writer.kill()
        writer.wait()
    assert run.returncode == 4 and "stalled" in run.stderr, run.stderr
    frames = [r["frame"] for r in _lines(jsonl)]
    assert frames == list(range(len(frames)))  # what came before the stall is written, in order
    assert 0 < len(frames) <= readable  # (a pipe may hold back the last, incomplete frame)


@pytest.mark.server
def test_a_video_served_over_http_is_read_as_a_stream_url(server, tmp_path):
    _write_video(tmp_path / "clip.avi", 6, codec="MJPG")
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as web:
        threading.Thread(target=web.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{web.server_address[1]}"
        try:
            jsonl = tmp_path / "people.jsonl"
            run = _run_tool(f"{url}/clip.avi", *_over_grpc(server), "--max-frames", 4, "--jsonl", jsonl)
            missing = _run_tool(f"{url}/absent.avi", *_over_grpc(server), "--source-timeout", 5, timeout=60)
        finally:
            web.shutdown()
    assert run.returncode == 0, run.stderr
    assert [r["frame"] for r in _lines(jsonl)] == [0, 1, 2, 3]
    assert missing.returncode == 4 and "cannot open" in missing.stderr, missing.stderr


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.mark.server
def test_sources_that_cannot_be_opened_fail_with_a_message(server, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    for source, message in ((tmp_path / "missing.mp4", "no such file"), (junk, "cannot open"),
                            (tmp_path, "no images")):
        run = _run_tool(source, *_over_grpc(server), timeout=60)
        assert run.returncode == 4, run.stderr
        assert message in run.stderr


def test_unreachable_server_fails_with_a_message(tmp_path):
    video = _write_video(tmp_path / "walk.mp4", 2)
    run = _run_tool(video, "--url", f"127.0.0.1:{free_port()}", timeout=60)
    assert run.returncode == 3
    assert "cannot reach Triton" in run.stderr


@pytest.mark.parametrize(("error", "fatal"), [
    (("in ensemble 'rtmo', Exceeds maximum queue size", "StatusCode.UNAVAILABLE"), False),  # gRPC busy
    (("in ensemble 'rtmo', Exceeds maximum queue size", "503"), False),  # HTTP busy
    (("not a decodable image", "400"), False),
    (("failed to connect to all addresses", "StatusCode.UNAVAILABLE"), True),
    (("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED"), True),
])
def test_a_busy_server_fails_the_frame_alone_over_either_protocol(monkeypatch, error, fatal):
    """Busy is not lost: only a server that cannot be reached ends the run (exit 3)."""
    from tritonclient.utils import InferenceServerException

    from rtmo_triton.client import video_sender
    from rtmo_triton.client.transport import Client, Outcome

    exc = InferenceServerException(error[0], status=error[1])
    monkeypatch.setattr(Client, "infer", lambda *a, **k: [Outcome(None, exc, 1.0)])
    sender = video_sender.FrameSender("127.0.0.1:1", "http")
    try:
        reply = sender(None, data=b"jpeg")
    finally:
        sender.close()
    assert reply.fatal is fatal and not reply.people.ok and error[0] in reply.people.error


def test_a_stream_of_any_length_keeps_a_bounded_latency_record():
    from rtmo_triton.client.video_outputs import LATENCY_WINDOW
    from rtmo_triton.client.video_pipeline import LATENCY_KEPT, Stats

    stats = Stats()
    stats.latencies_ms.extend(range(LATENCY_KEPT + 1000))  # one per frame, as replies come back
    assert len(stats.latencies_ms) == LATENCY_KEPT
    assert stats.percentiles()[0] == 1000 + (LATENCY_KEPT - 1) / 2  # the summary: the latest frames
    assert stats.percentiles(LATENCY_WINDOW)[0] == LATENCY_KEPT + 1000 - (LATENCY_WINDOW + 1) / 2
