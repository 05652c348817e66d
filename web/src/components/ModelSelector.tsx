import type { ModelInfo } from "../api/types";

export function ModelSelector({ models, value, onChange }: { models: ModelInfo[]; value: string | null; onChange: (model: string) => void }) {
  const known = value === null || models.some((m) => m.id === value);
  return (
    <label className="model-selector">
      <span className="visually-hidden">Model</span>
      <select value={value ?? ""} onChange={(e) => onChange(e.target.value)} aria-label="Model">
        {value === null && <option value="">Default model</option>}
        {!known && <option value={value}>{value} (unavailable)</option>}
        {models.map((model) => (
          <option key={model.id} value={model.id}>
            {model.id}
          </option>
        ))}
      </select>
    </label>
  );
}
