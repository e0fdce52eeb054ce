// Editing a review task's proposal: Annotorious holds this one shape (nothing else is drawn through it), selected
// and editable; `changes()` reads the edited geometry back as the API stores it (shapes.ts). A separate chunk:
// the inbox loads Annotorious only when an expert edits a proposal.

import "@annotorious/openseadragon/annotorious-openseadragon.css";

import { createOSDAnnotator, type ImageAnnotation } from "@annotorious/openseadragon";
import type OpenSeadragon from "openseadragon";

import type { AnnotationRecord } from "./api";
import { geometryChanges, RESHAPEABLE, shapeOf, type Extent } from "./shapes";

export interface ProposalEditor {
  /** The edited geometry as PATCH-style changes (null: unchanged or not reshapeable). */
  changes(): ReturnType<typeof geometryChanges>;
  destroy(): void;
}

const ID = "review-proposal";

export function editProposal(viewer: OpenSeadragon.Viewer, record: AnnotationRecord, extent: Extent): ProposalEditor {
  const selector = RESHAPEABLE.has(record.kind) ? shapeOf(record, 4) : null;
  if (!selector) return { changes: () => null, destroy: () => undefined };
  const annotator = createOSDAnnotator(viewer, { drawingEnabled: false, theme: "dark" });
  const annotation: ImageAnnotation = {
    id: ID,
    bodies: [],
    target: { annotation: ID, selector },
  };
  annotator.setAnnotations([annotation]);
  annotator.setSelected(ID, true);
  let edited = false;
  annotator.on("updateAnnotation", () => {
    edited = true;
  });
  return {
    changes: () => {
      const now = annotator.getAnnotationById(ID);
      return edited && now ? geometryChanges(record.kind, now.target.selector, extent) : null;
    },
    destroy: () => annotator.destroy(),
  };
}
