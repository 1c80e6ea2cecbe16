"""Generation prompts: one per QA, with the TRUE earlier answers as history, never predictions."""

from vlmft_cli.backends import backend_for
from vlmft_cli.data.schema import TurnInfo, iter_samples
from vlmft_cli.evaluate.generation import PromptEncoder
from vlmft_cli.evaluate.prompts import generation_jobs
from vlmft_cli.model_backend import Turn
from vlmft_cli.pipeline.examples import Example, build_examples


def conversation(qas, example_id="video-1"):
    turns = tuple(t for q, a in qas for t in (Turn("user", q), Turn("assistant", a)))
    infos = tuple(TurnInfo(task, None, "freeform", None) for task in ("planning", "affordance", "success")[: len(qas)])
    return Example(id=example_id, images=("a.jpg",), turns=turns, turn_info=infos, video_id=example_id, length=0)


def test_stage2_turn_k_sees_the_true_answers_before_it():
    qas = [("Q: immediate next step?", "open the drawer"), ("open the drawer Q: possible right now?", "yes"), ("Q: satisfied?", "no")]
    jobs = generation_jobs([conversation(qas)])
    assert [job.turn for job in jobs] == [0, 1, 2]
    assert [job.reference for job in jobs] == ["open the drawer", "yes", "no"]
    assert [job.task_type for job in jobs] == ["planning", "affordance", "success"]
    for k, job in enumerate(jobs):
        expected = [t for q, a in qas[:k] for t in (Turn("user", q), Turn("assistant", a))] + [Turn("user", qas[k][0])]
        assert list(job.prompt) == expected
        assert job.question == qas[k][0]


def test_stage1_examples_give_one_job_each_in_order():
    examples = [conversation([("Q: what just happened?", "pick up the cup")], "a-0"), conversation([("Q: satisfied?", "yes")], "a-1")]
    jobs = generation_jobs(examples)
    assert [(job.example_index, job.example_id, job.turn) for job in jobs] == [(0, "a-0", 0), (1, "a-1", 0)]
    assert [list(job.prompt) for job in jobs] == [[Turn("user", "Q: what just happened?")], [Turn("user", "Q: satisfied?")]]


def test_encoded_prompt_holds_the_true_history_and_ends_where_the_answer_starts(processed_data, vlmft_home):
    backend = backend_for("tiny-internvl3")
    processor = backend.load_processor("tiny-internvl3", vlmft_home)
    samples = [s for s in iter_samples(processed_data / "stage2" / "val.jsonl", processed_data) if len(s.turns) >= 3]
    examples, _ = build_examples(samples[:1], backend=backend, processor=processor, max_frames=4, frame_sampling="uniform-last", max_length=4096)
    jobs = generation_jobs(examples)
    encode = PromptEncoder(examples, processed_data, backend, processor)
    third = encode(jobs[2])
    text = processor.tokenizer.decode(third.input_ids)
    answers = samples[0].answers
    questions = [q.strip() for q in samples[0].questions]
    history = f"{questions[0]}<|im_end|>\n<|im_start|>assistant\n{answers[0]}<|im_end|>\n<|im_start|>user\n{questions[1]}<|im_end|>\n<|im_start|>assistant\n{answers[1]}<|im_end|>\n"
    assert text.endswith(history + f"<|im_start|>user\n{questions[2]}<|im_end|>\n<|im_start|>assistant\n")
    assert (third.input_ids == processor.image_context_id).sum() == 4 * processor.image_seq_length  # frames in the first turn only
    assert third.pixel_values.shape[0] == 4
