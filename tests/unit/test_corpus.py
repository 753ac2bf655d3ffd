"""The built-in corpus: documents through the API, ranked with BM25 by rag_search."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import drain
from workflows.roots.parts import Parts

BASE = "/api/v1/workflows"


def _add(client: TestClient, content: str, **metadata: str) -> str:
    response = client.post(f"{BASE}/corpus/documents", json={"content": content, "metadata": metadata})
    assert response.status_code == 201, response.text
    doc_id: str = response.json()["doc_id"]
    return doc_id


def test_documents_crud(client: TestClient) -> None:
    doc_id = _add(client, "Lambda functions scale automatically.", topic="aws")
    assert client.get(f"{BASE}/corpus/documents/{doc_id}").json()["metadata"] == {"topic": "aws"}
    replaced = client.post(f"{BASE}/corpus/documents", json={"id": doc_id, "content": "changed"})
    assert replaced.status_code == 201
    assert client.get(f"{BASE}/corpus/documents/{doc_id}").json()["content"] == "changed"
    listed = client.get(f"{BASE}/corpus/documents", params={"limit": 10}).json()
    assert [d["doc_id"] for d in listed["documents"]] == [doc_id]
    assert client.delete(f"{BASE}/corpus/documents/{doc_id}").status_code == 204
    assert client.get(f"{BASE}/corpus/documents/{doc_id}").status_code == 404
    assert client.delete(f"{BASE}/corpus/documents/{doc_id}").status_code == 404


def test_bad_documents_are_422(client: TestClient) -> None:
    assert client.post(f"{BASE}/corpus/documents", json={"content": ""}).status_code == 422
    bad_id = client.post(f"{BASE}/corpus/documents", json={"id": "../x", "content": "x"})
    assert bad_id.status_code == 422
    assert bad_id.json()["error"]["details"][0]["field"] == "id"


def test_rag_search_ranks_the_tenants_documents_with_bm25(client: TestClient, container: Parts) -> None:
    _add(client, "DynamoDB transactions are atomic across tables.", topic="storage")
    best = _add(
        client, "SQS delay seconds postpone delivery of a message up to fifteen minutes.", topic="queues"
    )
    _add(client, "S3 buckets hold objects.", topic="storage")
    _add(client, "Delay queues in SQS postpone every message.", topic="other")
    definition = {
        "name": "search",
        "steps": [
            {
                "id": "find",
                "type": "rag_search",
                "config": {
                    "query": "{{ inputs.q }}",
                    "backend": "builtin",
                    "top_k": 2,
                    "filters": {"topic": "queues"},
                },
            }
        ],
    }
    run_id = client.post(
        f"{BASE}/runs", json={"definition": definition, "inputs": {"q": "how long can SQS delay a message"}}
    ).json()["run_id"]
    drain(container)
    run = client.get(f"{BASE}/runs/{run_id}").json()
    assert run["status"] == "succeeded", run
    documents = run["outputs"]["documents"]
    assert [d["id"] for d in documents] == [best]  # the filter kept one; BM25 scored it above 0
    assert documents[0]["score"] > 0

    unfiltered = dict(definition["steps"][0])
    unfiltered["config"] = {"query": "{{ inputs.q }}", "backend": "builtin", "top_k": 2}
    run_id = client.post(
        f"{BASE}/runs",
        json={"definition": {"name": "s2", "steps": [unfiltered]}, "inputs": {"q": "SQS delay message"}},
    ).json()["run_id"]
    drain(container)
    ranked = client.get(f"{BASE}/runs/{run_id}").json()["outputs"]["documents"]
    assert len(ranked) == 2
    assert {d["id"] for d in ranked} >= {best}
    assert ranked[0]["score"] >= ranked[1]["score"]
