"""The outside-crowd workflow, the same for every platform: publish a batch (publishing.py),
record the work that comes back as labels (work.py), settle it by the reliability decisions (pay,
refuse, block clear spammers) and close the batch (settling.py). Platform calls happen outside
database transactions; every step can be run again after a failure without doing anything
twice."""

from labelling.crowd.services.publishing import (
    CostEstimate,
    crowd_balance,
    crowd_batch_create,
    crowd_batch_publish,
    crowd_estimate,
    crowd_items_available,
    crowd_options,
)
from labelling.crowd.services.settling import (
    REFUSE_FEEDBACK,
    SettleResult,
    crowd_batch_close,
    crowd_batch_settle,
    crowd_block_applied,
    crowd_bonus_send,
    crowd_decision_applied,
    crowd_sync_all,
)
from labelling.crowd.services.work import (
    crowd_answer_record,
    crowd_batch_sync,
    crowd_link_answer,
    crowd_mturk_answer,
    link_batch,
    link_next_task,
    task_for_hit,
    worker_may_work,
)

__all__ = [
    "REFUSE_FEEDBACK", "CostEstimate", "SettleResult", "crowd_answer_record", "crowd_balance",
    "crowd_batch_close", "crowd_batch_create", "crowd_batch_publish", "crowd_batch_settle",
    "crowd_batch_sync", "crowd_block_applied", "crowd_bonus_send", "crowd_decision_applied",
    "crowd_estimate", "crowd_items_available", "crowd_link_answer", "crowd_mturk_answer",
    "crowd_options", "crowd_sync_all", "link_batch", "link_next_task", "task_for_hit",
    "worker_may_work",
]  # fmt: skip
