from django.db import models


class Note(models.Model):
    """A row a test writes in the same transaction as a job."""

    text = models.CharField(max_length=100)
