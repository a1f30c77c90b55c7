"""Operator tools: doctor, jitter, boot-time records, dependency analysis,
live reads of the running system and the OnFailure handler.

They may use the pipeline (to know what the plan is); the pipeline never uses them.
"""
