"""Which free cluster worker takes which waiting task (`modules.cluster.scheduling`): queue order, no return to a
worker that already failed the task, workers without the checkpoint passed over, and the preference for a worker
that has the checkpoint loaded, then the least used, then the one idle longest."""

from __future__ import annotations

from modules.cluster.scheduling import TaskView, WorkerView, assign, checkpoint_names, choose

MODEL = "x.safetensors"
MODEL_TITLE = "x.safetensors [abcd1234]"


def worker(name: str, *, loaded: tuple[str, ...] = (), lacks: tuple[str, ...] = (), tasks_done: int = 0,
           idle_since: float = 0.0) -> WorkerView:
    return WorkerView(name, checkpoint_names(*loaded), checkpoint_names(*lacks), tasks_done, idle_since)


def task(job: int, part: int = 0, checkpoint: str = MODEL, tried: tuple[str, ...] = ()) -> TaskView:
    return TaskView((job, part), checkpoint, frozenset(tried))


def names(pairs: list[tuple[TaskView, WorkerView]]) -> list[tuple[tuple[int, int], str]]:
    return [(t.key, w.name) for t, w in pairs]


# -- checkpoint names --------------------------------------------------------------------------------------------


def test_a_title_and_its_file_name_name_the_same_checkpoint() -> None:
    assert checkpoint_names(MODEL_TITLE) == checkpoint_names(MODEL) == checkpoint_names("X.SafeTensors")
    assert checkpoint_names("", MODEL_TITLE, "x") == frozenset({"x.safetensors", "x"})
    assert checkpoint_names() == frozenset()
    # Only a trailing " [hash]" is a title suffix; brackets elsewhere are part of the name.
    assert checkpoint_names("[v2] y.ckpt") == frozenset({"[v2] y.ckpt"})


# -- choose ------------------------------------------------------------------------------------------------------


def test_no_free_worker_or_none_allowed_gives_none() -> None:
    assert choose(task(0), []) is None
    assert choose(task(0, tried=("w1", "w2")), [worker("w1"), worker("w2")]) is None
    assert choose(task(0), [worker("w1", lacks=(MODEL,))]) is None


def test_a_task_never_goes_back_to_a_worker_it_tried() -> None:
    # w1 would win on every other rule (model loaded, never used, idle longest), but the task died on it.
    w1 = worker("w1", loaded=(MODEL,), idle_since=1.0)
    w2 = worker("w2", tasks_done=9, idle_since=50.0)
    assert choose(task(0, tried=("w1",)), [w1, w2]) is w2


def test_a_worker_lacking_the_checkpoint_is_passed_over_whatever_form_names_it() -> None:
    lacking = worker("w1", lacks=(MODEL,), idle_since=1.0)
    other = worker("w2", tasks_done=5, idle_since=99.0)
    # The task names the checkpoint by its title, the worker said it lacks the file name: the same file.
    assert choose(task(0, checkpoint=MODEL_TITLE), [lacking, other]) is other
    assert choose(task(0, checkpoint=MODEL), [lacking, other]) is other
    # Lacking another checkpoint does not matter for this one.
    assert choose(task(0, checkpoint="y.safetensors"), [lacking, other]) is lacking


def test_a_task_that_needs_no_checkpoint_may_go_to_any_worker() -> None:
    w1 = worker("w1", lacks=(MODEL,), idle_since=1.0)
    assert choose(task(0, checkpoint=""), [w1]) is w1


def test_the_worker_with_the_checkpoint_loaded_wins() -> None:
    fresh = worker("w1", tasks_done=0, idle_since=1.0)
    loaded = worker("w2", loaded=("x", MODEL, MODEL_TITLE), tasks_done=20, idle_since=100.0)
    assert choose(task(0, checkpoint=MODEL), [fresh, loaded]) is loaded
    assert choose(task(0, checkpoint=MODEL_TITLE), [fresh, loaded]) is loaded
    # Another checkpoint loaded is no advantage.
    assert choose(task(0, checkpoint="y.safetensors"), [loaded, fresh]) is fresh


def test_then_fewest_tasks_done_then_idle_longest() -> None:
    busy = worker("w1", tasks_done=3, idle_since=1.0)
    light = worker("w2", tasks_done=1, idle_since=80.0)
    assert choose(task(0), [busy, light]) is light

    recent = worker("w1", tasks_done=1, idle_since=80.0)
    longest = worker("w2", tasks_done=1, idle_since=10.0)
    assert choose(task(0), [recent, longest]) is longest
    assert choose(task(0), [longest, recent]) is longest


def test_a_full_tie_is_broken_the_same_way_whatever_the_order() -> None:
    a, b = worker("w1"), worker("w2")
    assert choose(task(0), [a, b]).name == choose(task(0), [b, a]).name


# -- assign ------------------------------------------------------------------------------------------------------


def test_tasks_are_served_in_queue_order() -> None:
    tasks = [task(2, 0), task(1, 1), task(1, 0), task(3, 0)]
    pairs = assign(tasks, [worker("w1"), worker("w2")])
    assert [key for key, _ in names(pairs)] == [(1, 0), (1, 1)]


def test_each_worker_gets_at_most_one_task() -> None:
    tasks = [task(0, i) for i in range(5)]
    free = [worker("w1", idle_since=1.0), worker("w2", idle_since=2.0), worker("w3", idle_since=3.0)]
    pairs = assign(tasks, free)
    assert names(pairs) == [((0, 0), "w1"), ((0, 1), "w2"), ((0, 2), "w3")]
    assert len({w.name for _, w in pairs}) == len(pairs)


def test_a_task_no_worker_may_take_does_not_block_the_ones_behind_it() -> None:
    blocked = task(0, checkpoint="rare.safetensors")
    later = task(1)
    free = [worker("w1", lacks=("rare.safetensors",))]
    assert names(assign([blocked, later], free)) == [((1, 0), "w1")]


def test_an_earlier_task_takes_the_best_worker_first() -> None:
    # Both tasks want the loaded worker; the earlier one gets it, the later one takes what is left.
    loaded = worker("w1", loaded=(MODEL,), tasks_done=9)
    other = worker("w2")
    pairs = assign([task(5), task(4)], [other, loaded])
    assert names(pairs) == [((4, 0), "w1"), ((5, 0), "w2")]


def test_no_tasks_or_no_workers_give_no_pairs() -> None:
    assert assign([], [worker("w1")]) == []
    assert assign([task(0)], []) == []
