"""Retrieval: which remembered concepts a query image or text refers to."""

from rap.retrieval.retriever import Retrieval, RetrievedConcept, Retriever
from rap.retrieval.text import candidate_names

__all__ = ["Retrieval", "RetrievedConcept", "Retriever", "candidate_names"]
