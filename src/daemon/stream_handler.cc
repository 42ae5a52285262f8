#include "src/daemon/stream_handler.h"

#include "fmt/format.h"
#include "src/daemon/request_handler.h"

namespace cistern::daemon {

bool StreamHandler::Handles(const wire::Request& req) {
  switch (req.body_case()) {
    case wire::Request::kStreamOpen:
    case wire::Request::kStreamCommit:
    case wire::Request::kStreamLease:
    case wire::Request::kStreamAck:
    case wire::Request::kStreamFail:
    case wire::Request::kStreamStat:
    case wire::Request::kStreamList:
    case wire::Request::kStreamReconcile:
      return true;
    default:
      return false;
  }
}

uint64_t StreamHandler::WaitMs(const wire::Request& req) {
  if (req.has_stream_commit()) return req.stream_commit().wait_ms();
  if (req.has_stream_lease()) return req.stream_lease().wait_ms();
  return 0;
}

bool StreamHandler::Handle(const wire::Request& req, std::string_view client, Attempt attempt,
                           wire::Response* resp) {
  resp->set_id(req.id());
  if (streams_ == nullptr) {
    SetStatus(absl::FailedPreconditionError("this cisternd serves no streams"), resp);
    return false;
  }
  bool may_wait = attempt != Attempt::kFinal && WaitMs(req) > 0;
  switch (req.body_case()) {
    case wire::Request::kStreamOpen: {
      auto s = streams_->OpenStream(req.stream_open().name(), req.stream_open().options());
      if (!s.ok()) {
        SetStatus(s.status(), resp);
      } else {
        (*s)->FillInfo(resp->mutable_stream_info());
      }
      return false;
    }
    case wire::Request::kStreamCommit: {
      const auto& c = req.stream_commit();
      auto s = streams_->Find(c.name());
      if (!s.ok()) {
        SetStatus(s.status(), resp);
        return false;
      }
      bool blocked = false;
      wire::StreamCommitReply reply;
      absl::Status st =
          (*s)->Commit(c, c.producer().empty() ? client : c.producer(), &reply, &blocked);
      if (blocked) {
        if (attempt == Attempt::kFirst) (*s)->CountProducerWait();
        if (may_wait) return true;
        (*s)->CountProducerRejection();
      }
      if (!st.ok()) {
        SetStatus(st, resp);
      } else {
        *resp->mutable_stream_commit() = reply;
      }
      return false;
    }
    case wire::Request::kStreamLease: {
      const auto& l = req.stream_lease();
      auto s = streams_->Find(l.name());
      if (!s.ok()) {
        SetStatus(s.status(), resp);
        return false;
      }
      bool blocked = false;
      wire::StreamLeaseReply reply;
      absl::Status st = (*s)->Lease(l, /*final=*/!may_wait, &reply, &blocked);
      if (!st.ok()) {
        SetStatus(st, resp);
        return false;
      }
      if (blocked) {
        if (attempt == Attempt::kFirst) (*s)->CountConsumerStarved();
        return true;
      }
      if (attempt == Attempt::kFirst && WaitMs(req) == 0 && reply.refs_size() == 0) {
        (*s)->CountConsumerStarved();
      }
      *resp->mutable_stream_lease() = std::move(reply);
      return false;
    }
    case wire::Request::kStreamAck: {
      auto s = streams_->Find(req.stream_ack().name());
      absl::Status st =
          s.ok() ? (*s)->Ack(req.stream_ack(), resp->mutable_stream_ack()) : s.status();
      if (!st.ok()) SetStatus(st, resp);
      return false;
    }
    case wire::Request::kStreamFail: {
      auto s = streams_->Find(req.stream_fail().name());
      absl::Status st =
          s.ok() ? (*s)->Fail(req.stream_fail(), resp->mutable_stream_fail()) : s.status();
      if (!st.ok()) SetStatus(st, resp);
      return false;
    }
    case wire::Request::kStreamStat: {
      auto s = streams_->Find(req.stream_stat().name());
      if (!s.ok()) {
        SetStatus(s.status(), resp);
      } else {
        (*s)->FillInfo(resp->mutable_stream_info());
      }
      return false;
    }
    case wire::Request::kStreamList: {
      auto* r = resp->mutable_stream_list();
      for (const auto& [name, s] : streams_->streams()) s->FillInfo(r->add_streams());
      return false;
    }
    case wire::Request::kStreamReconcile: {
      auto s = streams_->Find(req.stream_reconcile().name());
      if (!s.ok()) {
        SetStatus(s.status(), resp);
        return false;
      }
      auto rep = (*s)->Reconcile();
      if (!rep.ok()) {
        SetStatus(rep.status(), resp);
        return false;
      }
      wire::StreamInfo info;
      (*s)->FillInfo(&info);
      auto* r = resp->mutable_stream_reconcile();
      r->set_released(rep->released);
      r->set_requeued(rep->requeued);
      r->set_lost(rep->lost);
      r->set_pending(info.depth());
      return false;
    }
    default:
      SetStatus(absl::InvalidArgumentError("not a stream request"), resp);
      return false;
  }
}

}  // namespace cistern::daemon
