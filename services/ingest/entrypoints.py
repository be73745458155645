"""The intake queue consumer: raw bytes in, acknowledged only after the handler
returned (that is, after the mail was stored and committed)."""
from __future__ import annotations

from functools import partial

from kombu import Queue
from nameko.exceptions import ContainerBeingKilled
from nameko.messaging import Consumer

from osprey import contracts


def intake_queue() -> Queue:
    return Queue(contracts.INTAKE_QUEUE, durable=True, auto_delete=False, no_declare=False)


class IntakeConsumer(Consumer):
    """nameko's ``consume`` that also hands the handler the AMQP headers (the
    delivery envelope). A handler that raises gets the message requeued."""

    def __init__(self, **kwargs):
        super().__init__(queue=intake_queue(), requeue_on_error=True, **kwargs)

    def handle_message(self, body, message):
        handle_result = partial(self.handle_result, message)
        headers = dict(message.headers or {})
        try:
            self.container.spawn_worker(self, (body, headers), {}, context_data={},
                                        handle_result=handle_result)
        except ContainerBeingKilled:
            self.queue_consumer.requeue_message(message)


intake = IntakeConsumer.decorator
