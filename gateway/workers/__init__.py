"""Who runs the pipeline: in-process threads (the embedded default) or Celery workers on
RabbitMQ (scale-out), and the housekeeper that hands over what is due."""
